"""Shared fixtures of the kernel tests.

``qconv_isa`` runs a test once per instruction-set variant of the int8 convolution kernels that is built
and runnable on this CPU, straight from the registry (qvision_kernels._registry), so that a new variant is
tested the moment it is built.  A build with no usable variant fails the tests instead of skipping them.
"""
import pytest

from qvision_kernels import _registry

QCONV_ISAS = _registry.usable('qconv')


@pytest.fixture(params=QCONV_ISAS or [None], ids=lambda name: name or 'none-built')
def qconv_isa(request):
    if request.param is None:
        pytest.fail('no variant of the qconv kernels is built and usable on this CPU; build the package '
                    '(python setup.py build_ext --inplace) before running the kernel tests')
    return request.param
