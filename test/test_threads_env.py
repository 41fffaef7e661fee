"""qvision_kernels makes idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE) unless the user set a wait
policy, and libgomp sees the setting: it reads it when the first compiled module loads.

Checked in fresh interpreters, with OMP_DISPLAY_ENV=VERBOSE so that libgomp prints the settings it uses.
Its OMP_WAIT_POLICY line says PASSIVE for the default too, so the test reads the spin count it derived:
0 for PASSIVE, 300000 for libgomp's default, 30000000000 for ACTIVE.
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _libgomp_env(extra):
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')}
    env.update(extra)
    env['OMP_DISPLAY_ENV'] = 'VERBOSE'
    env['PYTHONPATH'] = os.pathsep.join([ROOT] + [p for p in sys.path if p])
    code = 'import qvision_kernels, numpy as np; qvision_kernels.QLinear(np.ones((2, 4), np.int8), None, 0, 1.0, 0)(np.ones((3, 4), np.uint8), num_threads=2)'
    run = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stderr


def test_passive_by_default():
    out = _libgomp_env({})
    assert "GOMP_SPINCOUNT = '0'" in out, out


@pytest.mark.parametrize('extra, expected', [({'OMP_WAIT_POLICY': 'active'}, "GOMP_SPINCOUNT = '30000000000'"),
                                             ({'GOMP_SPINCOUNT': '1000'}, "GOMP_SPINCOUNT = '1000'")])
def test_user_setting_is_kept(extra, expected):
    out = _libgomp_env(extra)
    assert expected in out, out
