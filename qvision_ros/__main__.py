"""``python -m qvision_ros``: the ``qvision`` command (see :mod:`qvision_ros.cli`)."""
import sys

from .cli import main

sys.exit(main())
