"""rclpy.publisher of the double."""
from .node import Publisher  # noqa: F401
