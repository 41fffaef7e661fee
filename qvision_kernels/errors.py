"""The one exception type of the kernel layer."""


class KernelError(ValueError):
    """A kernel was called with arrays or parameters it cannot take.

    The message names the argument, what was expected and what was given.  Subclasses ValueError so that
    callers that only know NumPy's conventions still catch it.
    """
