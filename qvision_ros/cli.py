"""The ``qvision`` command: the pipeline and the int8 toolchain without ROS (DESIGN.md section 7).

    qvision demo                         # the shipped detector on the shipped road clip
    qvision run road.mp4 --model m.onnx  # any video, image folder, camera index or rosbag2
    qvision eval --data annotations.json --model fp32.onnx int8.onnx
    qvision bench

Subcommands are a table: each is a module with ``add_arguments(parser)`` and ``run(args) -> int``,
imported only when chosen (so ``qvision --help`` is quick and one subcommand's optional dependency never
breaks another).  The project's own errors (:class:`~qvision_ros.errors.QVisionError`) print as one line
and exit with status 2; ``--debug`` shows the traceback instead.

Also here: :class:`Progress`, the small progress display on stderr the subcommands share.
"""
import argparse
import importlib
import sys
import time

from .errors import QVisionError

#: name -> (module, one-line help).  The lead adds ``quantize`` (``qvision_ros.quantization.cli``).
COMMANDS = {
    'run': ('qvision_ros.cli_run', 'detect objects in a video, image folder, camera or rosbag2; write an '
                                   'annotated video and the detections'),
    'demo': ('qvision_ros.cli_demo', 'run the shipped detector on the shipped sample road clip'),
    'eval': ('qvision_ros.evaluate', 'mAP@0.5 and mAP@0.5:0.95 of one or more models on a COCO- or '
                                     'VOC-format data set'),
    'bench': ('qvision_ros.bench', 'latency, FPS, memory and model size: NumPy reference, our fp32 and int8, '
                                   'ONNX Runtime'),
    'quantize': ('qvision_ros.quantization.cli', 'post-training quantisation of a float ONNX model into a QDQ '
                                                 'int8 model (calibration, partial quantisation, report)'),
    'soak': ('qvision_ros.soak', 'soak and overload benchmarks: RSS over 100,000 frames, latency under 3x '
                                 'overload'),
}

EXIT_ERROR = 2        # a classified error (bad input, missing file, ...)
EXIT_INTERRUPTED = 130


def build_parser(commands=None):
    """The argument parser with every subcommand of ``commands`` (default :data:`COMMANDS`)."""
    commands = COMMANDS if commands is None else commands
    parser = argparse.ArgumentParser(prog='qvision', description='qvision: CPU-only int8 object detection '
                                     'without ROS - the pipeline, evaluation and benchmarks')
    parser.add_argument('--debug', action='store_true', help='show the full traceback of an error')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    for name, (module, summary) in commands.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=summary, description=(mod.__doc__ or summary).strip().split('\n')[0])
        p.add_argument('--debug', action='store_true', default=argparse.SUPPRESS,
                       help='show the full traceback of an error')
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def _chosen(argv, commands):
    """The subcommand named in ``argv`` (first argument that is a known command), or None."""
    for a in argv:
        if a in commands:
            return a
        if not a.startswith('-'):
            return None
    return None


def main(argv=None):
    """Entry point of the ``qvision`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the chosen subcommand's module (all of them for --help or a typo).
    name = _chosen(argv, COMMANDS)
    commands = {name: COMMANDS[name]} if name else COMMANDS
    debug = '--debug' in argv
    try:
        parser = build_parser(commands)
        args = parser.parse_args(argv)
        return int(args._module.run(args) or 0)
    except QVisionError as exc:
        if debug:
            raise
        print('qvision: error: %s' % exc, file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print('qvision: interrupted', file=sys.stderr)
        return EXIT_INTERRUPTED


class Progress:
    """A one-line progress display on stderr: ``label [####....] 75/150 36.1 FPS eta 2 s | extra``.

    On a terminal the line is redrawn in place at most every ``interval`` seconds; elsewhere (logs, CI) a
    plain line is printed every ``log_interval`` seconds.  ``total`` may be None (no bar, no ETA).
    Nothing is printed when ``enabled`` is False.
    """

    def __init__(self, label, total=None, stream=None, enabled=True, interval=0.2, log_interval=5.0):
        self.label = label
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, 'isatty', lambda: False)())
        self.interval = interval if self.tty else log_interval
        self.start = time.perf_counter()
        self._last = -1e9
        self.done = 0
        self._width = 0

    def update(self, done, extra='', force=False):
        self.done = done
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < self.interval):
            return
        self._last = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [self.label]
        if self.total:
            frac = min(1.0, done / self.total)
            n = int(frac * 24)
            parts.append('[%s%s] %d/%d' % ('#' * n, '.' * (24 - n), done, self.total))
            if rate > 0 and done < self.total:
                parts.append('eta %.0f s' % ((self.total - done) / rate))
        else:
            parts.append('%d' % done)
        parts.append('%.1f/s' % rate)
        line = ' '.join(parts) + (' | ' + extra if extra else '')
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write('\r' + line + ' ' * pad)
            self._width = len(line)
        else:
            self.stream.write(line + '\n')
        self.stream.flush()

    def close(self, extra=''):
        """Draw the final state and end the line."""
        if not self.enabled:
            return
        self.update(self.done, extra, force=True)
        if self.tty:
            self.stream.write('\n')
            self.stream.flush()


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
