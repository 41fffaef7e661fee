"""YAML for the doubles and their tests: PyYAML when installed, else ruamel.yaml (which rosbags brings).

Both are used in their safe modes (plain data only), which is what rcl's YAML parser and launch accept.
"""
import io

try:
    import yaml as _pyyaml
except ImportError:       # the README's test environment has rosbags (and so ruamel.yaml), maybe not PyYAML
    _pyyaml = None


def load(text):
    """The data in a YAML string."""
    if _pyyaml is not None:
        return _pyyaml.safe_load(text)
    from ruamel.yaml import YAML
    return YAML(typ='safe', pure=True).load(text)


def dump(data, stream):
    """Write plain data as YAML to a text stream."""
    if _pyyaml is not None:
        _pyyaml.safe_dump(data, stream)
        return
    from ruamel.yaml import YAML
    YAML(typ='safe', pure=True).dump(data, stream)


def dumps(data):
    buf = io.StringIO()
    dump(data, buf)
    return buf.getvalue()
