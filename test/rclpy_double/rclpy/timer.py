"""rclpy.timer of the double."""
from .node import Timer  # noqa: F401
