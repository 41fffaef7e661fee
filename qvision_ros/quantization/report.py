"""The quantisation report: ``sensitivity.json`` and a plot of the per-layer error, ``sensitivity.png``.

The plot needs matplotlib (the ``report`` extra), imported only here and drawn with the Agg backend on a
figure of its own (no pyplot, no global state); without matplotlib the JSON is still written and
:func:`write_report` raises :class:`~qvision_ros.errors.ConfigError` saying how to get the plot.
"""
import json
import os

from ..errors import ConfigError

BLOCK_COLOURS = {'backbone': '#4c72b0', 'neck': '#55a868', 'head': '#c44e52', None: '#8c8c8c'}


def emit_json(data, path=None, stream=None):
    """Print ``data`` as indented JSON (to ``stream``, default stdout; None-able) and write it to ``path``
    when given: the figures of the quantizer's scripts."""
    import sys
    text = json.dumps(data, indent=2)
    if stream is not False:
        (stream or sys.stdout).write(text + '\n')
    if path:
        with open(path, 'w') as fh:
            fh.write(text + '\n')
    return text


def _mb(n):
    return '%.2f MB' % (n / 1e6)


def write_report(report, folder, plot=True, extra=None):
    """Write ``report`` (a :class:`.sensitivity.SensitivityReport`) into ``folder`` (created when
    missing): the JSON always, the PNG when ``plot``.  ``extra``: more JSON fields.  Returns the paths."""
    os.makedirs(folder, exist_ok=True)
    data = report.to_dict()
    if extra:
        data.update(extra)
    paths = {'json': os.path.join(folder, 'sensitivity.json')}
    with open(paths['json'], 'w') as fh:
        json.dump(data, fh, indent=2)
        fh.write('\n')
    if plot:
        paths['png'] = os.path.join(folder, 'sensitivity.png')
        plot_report(report, paths['png'])
    return paths


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        raise ConfigError("the report plot needs matplotlib: pip install 'qvision_ros[report]' (or "
                          "python3-matplotlib), or ask for the JSON report only") from None
    return Figure, FigureCanvasAgg, Patch


def _short(name):
    parts = [p for p in name.split('/') if p]
    return '/'.join(parts[-3:-1]) if len(parts) > 2 else name


def plot_report(report, path):
    """Per-layer SQNR bars (coloured by block; lower = more sensitive), the per-block SQNR and the model
    sizes FP32 / INT8 / chosen partial."""
    Figure, FigureCanvasAgg, Patch = _matplotlib()
    fig = Figure(figsize=(max(8.0, 0.09 * len(report.layers) + 3.0), 6.0), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 2, width_ratios=[5, 1], wspace=0.25)
    ax = fig.add_subplot(grid[0])
    finite = [l.sqnr_db for l in report.layers]
    ax.bar(range(len(finite)), finite, color=[BLOCK_COLOURS.get(l.block, '#8c8c8c') for l in report.layers])
    ax.axhline(report.int8.sqnr_db, color='k', linestyle='--', linewidth=1)
    ax.text(0, report.int8.sqnr_db, ' all layers int8: %.1f dB' % report.int8.sqnr_db, va='bottom', fontsize=8)
    ax.set_xlabel('layer (graph order), quantised alone')
    ax.set_ylabel('output SQNR vs FP32 [dB] (channels averaged)')
    ax.set_xlim(-1, max(len(finite), 1))
    used = sorted({l.block for l in report.layers}, key=lambda b: list(BLOCK_COLOURS).index(b)
                  if b in BLOCK_COLOURS else 99)
    ax.legend(handles=[Patch(color=BLOCK_COLOURS.get(b, '#8c8c8c'), label=b or 'other') for b in used],
              loc='lower right', fontsize=8)
    for k in sorted(range(len(finite)), key=finite.__getitem__)[:5]:          # the five most sensitive
        ax.annotate(_short(report.layers[k].name), (k, finite[k]), fontsize=6, rotation=90, va='bottom',
                    ha='center')
    bx = fig.add_subplot(grid[1])
    names = list(report.blocks)
    bx.bar(range(len(names)), [report.blocks[b].sqnr_db for b in names],
           color=[BLOCK_COLOURS.get(b, '#8c8c8c') for b in names])
    bx.set_xticks(range(len(names)))
    bx.set_xticklabels(names, rotation=45, fontsize=8)
    bx.set_title('block alone', fontsize=9)
    choice = ', '.join(report.choice.keep_float_blocks) or 'none'
    fig.suptitle('Sizes: FP32 %s, INT8 %s, chosen partial (float: %s) %s'
                 % (_mb(report.fp32.size_bytes), _mb(report.int8.size_bytes), choice,
                    _mb(report.choice.size_bytes)), fontsize=10)
    fig.savefig(path)
    return path
