"""NumPy references of every kernel, one module per operator family.

They exist for testing: each is the obvious, literal expression of DESIGN.md section 3 (through
:mod:`qvision_kernels.requant`), slow and never optimised.  Layouts are those of the compiled kernels:
activations NHWC, convolution weights [OC, KH, KW, C/groups], padding (top, left, bottom, right).
Modules: :mod:`.conv` (int8 convolution and GEMM, float32 im2col), :mod:`.fconv` (float32 convolution
with clamp, sigmoid, SiLU), :mod:`.pool`, :mod:`.eltwise`.
"""
from .conv import conv2d_f32_im2col, conv2d_int8, conv_output_size, gemm_int8  # noqa: F401
from .fconv import conv2d_f32, linear_f32, sigmoid_f64  # noqa: F401
