"""Nothing read from a file is ever executed: a scan of every module of the package (the ones added later
included) for the ways Python turns data into code - unpickling, eval/exec, unsafe YAML, numpy.load
without allow_pickle=False, torch.load without weights_only=True."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('qvision_ros', 'qvision_kernels', 'launch')

# module.function calls that unpickle or otherwise run code from their input
FORBIDDEN = {('pickle', 'load'), ('pickle', 'loads'), ('pickle', 'Unpickler'), ('cPickle', 'load'),
             ('cPickle', 'loads'), ('marshal', 'load'), ('marshal', 'loads'), ('shelve', 'open'),
             ('dill', 'load'), ('dill', 'loads'), ('joblib', 'load'), ('yaml', 'load'), ('yaml', 'unsafe_load'),
             ('yaml', 'full_load'), ('yaml', 'load_all'), ('jsonpickle', 'decode'), ('pandas', 'read_pickle'),
             ('pd', 'read_pickle')}
# calls that are safe only with this keyword set to this literal
REQUIRED_KEYWORD = {('np', 'load'): ('allow_pickle', False), ('numpy', 'load'): ('allow_pickle', False),
                    ('torch', 'load'): ('weights_only', True)}


def _sources():
    for pkg in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in sorted(files):
                if f.endswith('.py'):
                    yield os.path.join(folder, f)


def findings(source, path='<source>'):
    """``['path:line: what']`` for every call in ``source`` that could run code read from a file."""
    out = []
    for node in ast.walk(ast.parse(source, path)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        where = '%s:%d' % (os.path.relpath(path, ROOT) if os.path.isabs(path) else path, node.lineno)
        if isinstance(f, ast.Name) and f.id in ('eval', 'exec', '__import__'):
            out.append('%s: %s()' % (where, f.id))
        if not (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)):
            continue
        key = (f.value.id, f.attr)
        if key in FORBIDDEN:
            out.append('%s: %s.%s()' % (where, *key))
        if key in REQUIRED_KEYWORD:
            name, value = REQUIRED_KEYWORD[key]
            given = [k.value for k in node.keywords if k.arg == name]
            if not (given and isinstance(given[0], ast.Constant) and given[0].value is value):
                out.append('%s: %s.%s() without %s=%r' % (where, *key, name, value))
    return out


def test_no_module_turns_file_contents_into_code():
    found = []
    for path in _sources():
        with open(path, encoding='utf-8') as fh:
            found += findings(fh.read(), path)
    assert not found, 'calls that may execute what a file holds:\n' + '\n'.join(found)


@pytest.mark.parametrize('source,expected', [
    ('import numpy as np\nnp.load(p)', 'np.load() without allow_pickle=False'),
    ('import numpy as np\nnp.load(p, allow_pickle=True)', 'np.load() without allow_pickle=False'),
    ('import torch\ntorch.load(p)', 'torch.load() without weights_only=True'),
    ('import pickle\npickle.loads(b)', 'pickle.loads()'),
    ('import yaml\nyaml.load(s)', 'yaml.load()'),
    ('eval(s)', 'eval()'),
    ('exec(s)', 'exec()'),
])
def test_the_scan_finds_each_pattern(source, expected):
    assert [f.split(': ', 1)[1] for f in findings(source)] == [expected]


@pytest.mark.parametrize('source', ['import numpy as np\nnp.load(p, allow_pickle=False)',
                                    'import torch\ntorch.load(p, weights_only=True)', 'model.eval()',
                                    'import yaml\nyaml.safe_load(s)', 'import pickle\npickle.dumps(x)'])
def test_the_scan_accepts_safe_calls(source):
    assert findings(source) == []
