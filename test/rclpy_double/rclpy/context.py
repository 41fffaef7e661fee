"""The double's context: init/shutdown state, the in-process ROS graph, command-line ROS arguments.

The graph stands in for rmw/DDS: publishers and subscriptions meet by fully-qualified topic name; a
message goes to every *matched* subscription - same type and compatible QoS, the rules of
``rmw_qos_profile_check_compatible`` (ros2/rmw ``rmw/src/qos_profiles.c``): a RELIABLE subscription does
not match a BEST_EFFORT publisher, a TRANSIENT_LOCAL subscription does not match a VOLATILE publisher.
Each delivery is a CDR round trip through rosbags (so the subscriber gets its own copy, as from DDS), into
the subscription's queue: KEEP_LAST(depth) drops the oldest, KEEP_ALL keeps everything.  A TRANSIENT_LOCAL
publisher keeps its last ``depth`` messages for late-joining TRANSIENT_LOCAL subscriptions.

ROS arguments (``rclpy.init(args=[..., '--ros-args', ...])``, rcl ``rcl_parse_arguments``): ``-p name:=value``,
``--params-file file`` (rcl_yaml_param_parser layout: ``<node>: ros__parameters: {...}`` with ``/**`` and
``/**/name`` wildcards, nested keys joined by '.'; merged as rcl merges them, see :class:`RosArguments`)
and ``-r __ns:=/ns`` / ``-r __node:=name``.
"""
import collections
import threading

from rclpy_double import yamlio

from .qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy


class Graph:
    def __init__(self, registry):
        self.registry = registry
        self.lock = threading.RLock()
        self.publishers = collections.defaultdict(list)      # topic -> [Publisher]
        self.subscriptions = collections.defaultdict(list)   # topic -> [Subscription]
        self.history = {}                                     # Publisher -> deque of raw bytes

    @staticmethod
    def compatible(pub_qos, sub_qos):
        if (sub_qos.reliability == ReliabilityPolicy.RELIABLE
                and pub_qos.reliability == ReliabilityPolicy.BEST_EFFORT):
            return False
        if (sub_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
                and pub_qos.durability == DurabilityPolicy.VOLATILE):
            return False
        return True

    def matched(self, pub, sub):
        return pub.msg_type is sub.msg_type and self.compatible(pub.qos_profile, sub.qos_profile)

    def add_publisher(self, pub):
        with self.lock:
            self.publishers[pub.topic_name].append(pub)
            if pub.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL:
                depth = pub.qos_profile.depth if pub.qos_profile.history == HistoryPolicy.KEEP_LAST else None
                self.history[pub] = collections.deque(maxlen=depth or None)

    def remove_publisher(self, pub):
        with self.lock:
            if pub in self.publishers.get(pub.topic_name, ()):
                self.publishers[pub.topic_name].remove(pub)
            self.history.pop(pub, None)

    def add_subscription(self, sub):
        with self.lock:
            self.subscriptions[sub.topic_name].append(sub)
            if sub.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL:
                for pub in self.publishers.get(sub.topic_name, ()):
                    if self.matched(pub, sub) and pub in self.history:
                        for raw in self.history[pub]:
                            sub._deliver(self.registry.deserialize(raw, pub.msg_type._typename))

    def remove_subscription(self, sub):
        with self.lock:
            if sub in self.subscriptions.get(sub.topic_name, ()):
                self.subscriptions[sub.topic_name].remove(sub)

    def subscription_count(self, pub):
        with self.lock:
            return sum(1 for s in self.subscriptions.get(pub.topic_name, ()) if self.matched(pub, s))

    def publisher_count(self, sub):
        with self.lock:
            return sum(1 for p in self.publishers.get(sub.topic_name, ()) if self.matched(p, sub))

    def count(self, topic, publishers):
        with self.lock:
            return len((self.publishers if publishers else self.subscriptions).get(topic, ()))

    def publish(self, pub, msg):
        raw = self.registry.serialize(msg)
        with self.lock:
            if pub in self.history:
                self.history[pub].append(raw)
            targets = [s for s in self.subscriptions.get(pub.topic_name, ()) if self.matched(pub, s)]
        for sub in targets:
            sub._deliver(self.registry.deserialize(raw, msg._typename))


def _params_from_yaml(path):
    """{node key: {param name: value}} of a ROS 2 parameters file."""
    with open(path) as f:
        doc = yamlio.load(f.read()) or {}
    if not isinstance(doc, dict):
        raise ValueError('parameters file %s: the top level must be a mapping of node names' % path)
    out = {}
    for key, body in doc.items():
        if not isinstance(body, dict) or 'ros__parameters' not in body:
            raise ValueError('parameters file %s: node %r has no ros__parameters' % (path, key))
        flat = {}

        def walk(prefix, d):
            for k, v in d.items():
                name = '%s.%s' % (prefix, k) if prefix else str(k)
                if isinstance(v, dict):
                    walk(name, v)
                else:
                    if isinstance(v, list) and not v:
                        # rcl_yaml_param_parser cannot type an empty sequence and fails the whole file
                        raise ValueError('parameters file %s: %s is an empty list, which ROS 2 cannot load'
                                         % (path, name))
                    if v is None:
                        raise ValueError('parameters file %s: %s has no value' % (path, name))
                    flat[name] = v
        walk('', body['ros__parameters'])
        key = str(key)
        out[key if key.startswith('/') else '/' + key] = flat
    return out


def _match(pattern, fqn):
    """rcl node-name matching in parameter files: '/**' any, '*' one token, else exact."""
    p = [t for t in pattern.split('/') if t]
    n = [t for t in fqn.split('/') if t]

    def rec(i, j):
        if i == len(p):
            return j == len(n)
        if p[i] == '**':
            return any(rec(i + 1, k) for k in range(j, len(n) + 1))
        if j < len(n) and (p[i] == '*' or p[i] == n[j]):
            return rec(i + 1, j + 1)
        return False
    return rec(0, 0)


class RosArguments:
    """The subset of ROS command-line arguments the double understands.

    Parameter overrides are kept as rcl keeps them (``rcl_arguments_get_param_overrides``, ros2/rcl
    ``rcl_yaml_param_parser/src/parse.c`` ``find_node``): one table of node keys in the order each key first
    appears on the command line, over every ``--params-file`` and ``-p`` (which is the key ``/**``); a later
    value of the same key and name replaces the earlier one in place.  rclpy then applies the keys that match
    the node in that order (``_populate_node_parameters_from_rcl_params``) - so a node-specific key of a
    params file wins over a ``-p`` or a later file's ``/**``, whatever their order on the command line.
    """

    def __init__(self, args):
        self.node_params = {}       # node key -> {parameter: value}, keys in order of first appearance
        self.remaps = {}
        self.log_level = None
        args = list(args or [])
        if '--ros-args' not in args:
            return
        rest = args[args.index('--ros-args') + 1:]
        i = 0
        while i < len(rest):
            a = rest[i]
            if a == '--':
                break
            if a == '--params-file':
                for key, values in _params_from_yaml(rest[i + 1]).items():
                    self.node_params.setdefault(key, {}).update(values)
                i += 2
            elif a in ('-p', '--param'):
                name, _, text = rest[i + 1].partition(':=')
                self.node_params.setdefault('/**', {})[name] = yamlio.load(text)
                i += 2
            elif a == '--log-level':
                self.log_level = rest[i + 1]
                i += 2
            elif a in ('-r', '--remap'):
                src, _, dst = rest[i + 1].partition(':=')
                self.remaps[src] = dst
                i += 2
            else:
                raise ValueError('the rclpy double does not understand the ROS argument %r' % a)

    def overrides_for(self, fqn):
        """{name: value} for the node ``fqn``: the matching keys in the order they first appeared."""
        out = {}
        for key, values in self.node_params.items():
            if _match(key, fqn):
                out.update(values)
        return out


class Context:
    def __init__(self):
        self._ok = False
        self.graph = None
        self.arguments = RosArguments(None)
        self.cond = threading.Condition()
        self._on_shutdown = []

    def init(self, args=None):
        if self._ok:
            raise RuntimeError('Context.init() must only be called once')
        from rclpy_double import registry
        self.graph = Graph(registry())
        self.arguments = RosArguments(args)
        self._ok = True

    def ok(self):
        return self._ok

    def shutdown(self):
        if not self._ok:
            raise RuntimeError('Context must be initialized before it can be shutdown')
        self._ok = False
        with self.cond:
            self.cond.notify_all()
        for cb in list(self._on_shutdown):
            cb()

    def try_shutdown(self):
        if self._ok:
            self.shutdown()

    def on_shutdown(self, callback):
        self._on_shutdown.append(callback)

    def wake(self):
        with self.cond:
            self.cond.notify_all()
