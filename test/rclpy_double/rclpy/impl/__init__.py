"""rclpy.impl of the double."""
