"""Composed mode: the three nodes in one process, one executor, the intermediate image handed over in memory.

rclpy has no component containers (``ComposableNode`` is for C++ nodes), so composition here is what
ros2/examples ``rclpy/executors/examples_rclpy_executors/composed.py`` shows: several node objects added
to one executor.  On top of that the preprocessing node hands the network-size image to the inference
node, and the raw frame to the visualization node, by reference through an
:class:`~.common.InMemoryHandover` - no serialization, no copy.  ``image_preprocessed`` is still
published when something subscribes to it (for inspection); ``detections_raw`` goes over its topic as
usual (it is small), so the graph looks the same from outside.
"""
from .common import InMemoryHandover, run_node
from .inference import InferenceNode
from .preprocess import PreprocessNode
from .visualization import VisualizationNode


class ComposedPipeline:
    """The three nodes sharing one :class:`InMemoryHandover`; ``nodes`` in data-flow order.

    Keyword arguments (``namespace``, ``parameter_overrides``, ``context`` ...) go to every node;
    ``engine_factory`` to the inference node.
    """

    def __init__(self, *, engine_factory=None, **node_kwargs):
        self.handover = InMemoryHandover()
        self.nodes = []
        try:
            self.visualization = VisualizationNode(handover=self.handover, **node_kwargs)
            self.nodes.append(self.visualization)
            self.inference = InferenceNode(handover=self.handover, engine_factory=engine_factory, **node_kwargs)
            self.nodes.append(self.inference)
            self.preprocess = PreprocessNode(handover=self.handover, **node_kwargs)
            self.nodes.insert(0, self.preprocess)
        except Exception:
            self.destroy()
            raise

    def add_to(self, executor):
        for node in self.nodes:
            executor.add_node(node)
        return executor

    def destroy(self):
        for node in reversed(self.nodes):
            node.destroy_node()
        self.nodes = []


def main(args=None):
    return run_node(lambda: ComposedPipeline().nodes, args)


__all__ = ['ComposedPipeline', 'main']


if __name__ == '__main__':
    raise SystemExit(main())
