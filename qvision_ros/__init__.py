"""qvision_ros: real-time int8 object detection for CPU-only ROS 2 robots."""
__version__ = '0.1.0'
