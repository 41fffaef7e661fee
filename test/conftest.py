"""Shared fixtures of the kernel tests.

``qconv_isa`` runs a test once per instruction-set variant of the int8 convolution kernels that is built
and runnable on this CPU, straight from the registry (qvision_kernels._registry), so that a new variant is
tested the moment it is built.  A build with no usable variant fails the tests instead of skipping them.
"""
from kernel_check import isa_fixture

qconv_isa = isa_fixture('qconv')
