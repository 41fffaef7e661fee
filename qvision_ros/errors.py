"""The exception types of qvision_ros: one per layer, each with a message that says what to do.

All derive from :class:`QVisionError`, so a node or the command line can catch every classified failure
in one place and keep running; anything else escaping is a bug.  The kernel layer's own type,
``qvision_kernels.KernelError``, stays separate (that package imports nothing from qvision_ros).
"""


class QVisionError(Exception):
    """Base of every error qvision_ros raises on purpose."""


class ImageError(QVisionError, ValueError):
    """A frame or image message that cannot be used: unknown encoding, wrong step, truncated data..."""


class ModelError(QVisionError):
    """A model file that cannot be loaded: corrupt, truncated, unsupported op or opset, absurd shapes."""


class InputError(QVisionError, ValueError):
    """Inputs given to a loaded model that do not match it (names, shapes, dtypes)."""


class ConfigError(QVisionError, ValueError):
    """A parameter or option with a wrong type or a value out of range."""


class DataError(QVisionError):
    """A data source (video, image folder, rosbag2, dataset annotations) that cannot be read."""
