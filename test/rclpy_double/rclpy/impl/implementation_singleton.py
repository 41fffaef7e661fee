"""rclpy.impl.implementation_singleton of the double: ``rclpy_implementation`` stands for rclpy's C extension
(``_rclpy_pybind11``).  Only its exception types are here, both RuntimeError subclasses as the extension
registers them: ``RCLError`` (an rcl call failed: an invalid lifecycle transition, publishing on a shut-down
context...) and ``InvalidHandle`` (a destroyed node or entity was used)."""
import types


class RCLError(RuntimeError):
    pass


class InvalidHandle(RuntimeError):
    pass


rclpy_implementation = types.SimpleNamespace(RCLError=RCLError, InvalidHandle=InvalidHandle)
