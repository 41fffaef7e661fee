"""rclpy.subscription of the double."""
from .node import Subscription  # noqa: F401
