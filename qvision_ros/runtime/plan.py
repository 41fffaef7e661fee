"""The execution plan: lowered steps, a memory plan, and the loop that runs them.

Built once per input shape.  Each step's outputs are either planned buffers, views of an input (Reshape
and friends), or arrays the step allocates itself (the rare ops without a kernel).  Planned buffers come
from a pool of blocks: a block is handed to a tensor when the tensor is produced and returned when its
last reader has run, so tensors whose lifetimes do not overlap share memory; nothing is allocated per
run except by the few NumPy-only ops.

Most values are therefore *fixed arrays*: the same buffer (or the same view of one) at every run.  A
step whose inputs are all fixed is bound once to them (``Lowered.bind``): the run loop calls a callable
without arguments, usually a ``functools.partial`` of a compiled kernel with every argument resolved, so a
step costs the kernel and its argument conversion and no Python of ours.  A step that reads a model input
or the fresh array of a NumPy-only op goes through a small closure that reads and writes the value table.
Views of fixed arrays are computed at plan time and cost nothing at run time.
"""
import time
from typing import NamedTuple, Tuple

import numpy as np

from qvision_kernels import KernelError

from ..errors import ModelError
from .lowering import LowerContext, lower
from .ops import node_error

ALIGN = 64
# Upper bound on the activation memory of one plan - planned buffers, the arrays NumPy-only steps allocate
# at each run and the copies of the outputs a run returns (the largest detectors at 1280 x 1280 need a few
# hundred MiB): a model whose shapes would need more is refused before anything is allocated.  Raise it
# here for larger inputs.
MAX_ARENA_BYTES = 1 << 30


class LayerRecord(NamedTuple):
    """One step of a profiled run."""
    name: str                       # the (first) ONNX node the step stands for
    op: str                         # the engine's op (QConv, Conv, QLut, ...)
    precision: str                  # 'int8', 'fp32' or the output dtype for other steps
    input_shapes: Tuple[tuple, ...]
    output_shapes: Tuple[tuple, ...]
    time_s: float                   # seconds (mean over the profiled runs)
    nodes: Tuple[str, ...] = ()     # every ONNX node fused into the step


def _precision(dtype):
    dtype = np.dtype(dtype)
    if dtype in (np.uint8, np.int8):
        return 'int8'
    if dtype == np.float32:
        return 'fp32'
    return dtype.name


def _dynamic_step(fn, ins, outs, keep, env):
    """A step that reads the value table (model inputs, fresh arrays): ``fn(*inputs)``, results stored."""
    if len(outs) == 1:
        (o,), (j,) = outs, keep

        def step():
            env[o] = fn(*[env[i] for i in ins])[j]
    else:
        pairs = list(zip(outs, keep))

        def step():
            res = fn(*[env[i] for i in ins])
            for o, j in pairs:
                env[o] = res[j]
    return step


class Plan:
    """Steps and buffers for one set of input shapes."""

    def __init__(self, graph, num_threads):
        self.graph = graph
        ctx = LowerContext(graph, num_threads)
        names = list(graph.values)
        slot = {name: k for k, name in enumerate(names)}
        env = [None] * len(names)
        for name, v in graph.values.items():
            if v.is_const:
                env[slot[name]] = v.const
        steps = []
        for node in graph.nodes:
            runtime = [i for i in node.inputs if i and not graph.values[i].is_const]
            if not runtime:
                raise ModelError('node %r (%s) has only constant inputs and cannot be folded'
                                 % (node.name, node.op))
            try:
                lowered = lower(node, ctx)
            except KernelError as e:        # the kernel refused the node's constants (weights, scales...)
                raise node_error(node, '%s: the model is corrupt or its quantisation parameters are invalid'
                                 % e) from None
            steps.append((node, lowered, [slot[i] for i in runtime], [slot[o] if o else None
                                                                       for o in node.outputs]))
        self._slot = slot
        self._env = env
        self.input_slots = [slot[i] for i in graph.inputs]
        self.output_slots = [slot[o] for o in graph.outputs]
        self.arena_bytes, buffers = self._plan_memory(steps, len(names))
        fixed = [None] * len(names)         # value slot -> the array it is at every run, when it is one
        program, where, slow, info = [], [], [], []
        for k, (node, lowered, ins, outs) in enumerate(steps):
            bufs = [buffers.get((k, j)) for j in range(len(lowered.specs) + len(lowered.scratch))]
            fn = lowered.make(bufs)
            keep = [j for j, o in enumerate(outs) if o is not None]
            kept_outs = [outs[j] for j in keep]
            slow.append((fn, ins, kept_outs, keep))
            specs = [lowered.specs[j] for j in keep]
            fixed_ins = [fixed[i] for i in ins]
            all_fixed = all(a is not None for a in fixed_ins)
            if all_fixed and specs and all(s[0] == 'view' for s in specs):
                res = fn(*fixed_ins)                     # views of fixed arrays: computed once, now
                for o, j in zip(kept_outs, keep):
                    fixed[o] = res[j]
            elif all_fixed and lowered.bind is not None and all(s[0] == 'buffer' for s in specs):
                program.append(lowered.bind(bufs, fixed_ins))
                where.append(k)
            else:
                program.append(_dynamic_step(fn, ins, kept_outs, keep, env))
                where.append(k)
            for o, j, s in zip(kept_outs, keep, specs):
                if s[0] == 'buffer':
                    fixed[o] = bufs[j]
            out_vals = [graph.values[o] for o in node.outputs if o]
            in_vals = [graph.values[i] for i in node.inputs if i and not graph.values[i].is_const]
            precision = _precision(out_vals[0].dtype) if out_vals else 'fp32'
            info.append((node.origin[0] if node.origin else node.name, node.op, precision,
                         tuple(v.physical_shape() for v in in_vals),
                         tuple(v.physical_shape() for v in out_vals), tuple(node.origin)))
        self._fixed = [(s, a) for s, a in enumerate(fixed) if a is not None]
        for s, a in self._fixed:
            env[s] = a
        self._transient = [k for k, name in enumerate(names)
                           if not graph.values[name].is_const and fixed[k] is None]
        self.program = program          # callables without arguments, in order
        self._where = where             # step index of each program entry
        self._slow = slow               # (fn, input slots, output slots, output indices) of every step
        self.info = info                # one record per step (bound, dynamic, or computed at plan time)

    def _plan_memory(self, steps, n_values):
        """Storage per value, lifetimes, and a best-fit reuse of blocks; returns (total bytes,
        {(step, output or scratch index): array})."""
        storage = [None] * n_values         # value slot -> storage id
        sizes, specs, defined = [], [], []
        aliases = {}                        # (step, output index) -> storage id of the input it overwrites
        last_read = [-1] * n_values
        for k, (node, lowered, ins, outs) in enumerate(steps):
            for i in ins:
                last_read[i] = k
        outputs = set(self.output_slots)
        members = {}                        # storage id -> value slots stored there
        fresh = 0                           # bytes of the arrays the NumPy-only steps allocate per run
        for k, (node, lowered, ins, outs) in enumerate(steps):
            extra = [('buffer',) + tuple(sc) for sc in lowered.scratch]
            outs = list(outs) + [None] * (len(lowered.specs) - len(outs)) + [None] * len(extra)
            for j, (spec, o) in enumerate(zip(list(lowered.specs) + extra, outs)):
                if o is None:
                    if spec[0] == 'buffer':
                        sizes.append(int(np.prod(spec[1], dtype=np.int64)) * np.dtype(spec[2]).itemsize)
                        specs.append((k, j, spec))
                        defined.append(k)
                    continue
                if spec[0] == 'buffer' and len(spec) > 3:
                    # may overwrite input spec[3] when nothing reads that memory after this step
                    src = ins[spec[3]]
                    st = storage[src]
                    if st is not None and sum(storage[i] == st for i in ins) == 1 and \
                            sizes[st] == int(np.prod(spec[1], dtype=np.int64)) * np.dtype(spec[2]).itemsize and \
                            all(last_read[u] <= k and u not in outputs for u in members.get(st, [])):
                        storage[o] = st
                        members[st].append(o)
                        aliases[(k, j)] = (st, spec)
                        continue
                if spec[0] == 'buffer':
                    members[len(sizes)] = [o]
                    storage[o] = len(sizes)
                    sizes.append(int(np.prod(spec[1], dtype=np.int64)) * np.dtype(spec[2]).itemsize)
                    specs.append((k, j, spec))
                    defined.append(k)
                elif spec[0] == 'view':
                    storage[o] = storage[ins[spec[1]]]
                    if storage[o] is not None:
                        members[storage[o]].append(o)
                elif spec[0] == 'fresh':             # allocated by the step at every run, kept until the end
                    v = self.graph.values[node.outputs[j]]
                    fresh += int(np.prod(v.shape, dtype=np.int64)) * np.dtype(v.dtype).itemsize
        last = list(defined)
        for k, (node, lowered, ins, outs) in enumerate(steps):
            for i in ins:
                if storage[i] is not None:
                    last[storage[i]] = max(last[storage[i]], k)
        for s in self_outputs_storage(self.output_slots, storage):
            last[s] = len(steps)
        # best-fit reuse, in step order: allocate the step's outputs, then free what it read last
        block_of = [None] * len(sizes)
        block_size = []
        free = []
        by_step = {}
        for s, k in enumerate(defined):
            by_step.setdefault(k, []).append(s)
        ends = {}
        for s, k in enumerate(last):
            ends.setdefault(k, []).append(s)
        for k in range(len(steps)):
            for s in by_step.get(k, []):
                need = sizes[s]
                fit = [b for b in free if block_size[b] >= need]
                if fit:
                    b = min(fit, key=lambda b: block_size[b])
                    free.remove(b)
                elif free:
                    b = max(free, key=lambda b: block_size[b])   # grow the largest free block
                    free.remove(b)
                    block_size[b] = need
                else:
                    b = len(block_size)
                    block_size.append(need)
                block_of[s] = b
            for s in ends.get(k, []):
                free.append(block_of[s])
        g = self.graph
        copies = sum(int(np.prod(g.values[o].shape, dtype=np.int64)) * np.dtype(g.values[o].dtype).itemsize
                     for o in g.outputs)        # run() returns copies of the outputs
        total = int(sum(block_size)) + fresh + copies
        if total > MAX_ARENA_BYTES:
            raise ModelError('the model needs %d MiB of activation memory for inputs %s, more than the %d MiB '
                             'allowed (qvision_ros.runtime.plan.MAX_ARENA_BYTES); use smaller input sizes'
                             % (total >> 20, {i: g.values[i].shape for i in g.inputs}, MAX_ARENA_BYTES >> 20))
        blocks = []
        for size in block_size:
            raw = np.empty(size + ALIGN, np.uint8)
            off = (-raw.ctypes.data) % ALIGN
            blocks.append(raw[off:off + size])
        buffers = {}
        for s, (k, j, spec) in enumerate(specs):
            shape, dtype = spec[1], spec[2]
            buffers[(k, j)] = blocks[block_of[s]][:sizes[s]].view(dtype).reshape(shape)
        for (k, j), (s, spec) in aliases.items():
            buffers[(k, j)] = blocks[block_of[s]][:sizes[s]].view(spec[2]).reshape(spec[1])
        return int(sum(block_size)), buffers

    def run(self, arrays, profile=None, capture=None):
        """Run on the input arrays (graph input order); returns the outputs (fresh arrays).  With
        ``profile`` a list, one time per step is appended to it (0 for the steps computed at plan time);
        with ``capture`` a dict, a copy of every intermediate value (logical NCHW order) is stored in it by
        name (for debugging: buffers are reused, so values are copied as they are produced)."""
        env = self._env
        if capture is not None:
            return self._run_capture(arrays, capture)
        for s, a in zip(self.input_slots, arrays):
            env[s] = a
        if profile is None:
            for step in self.program:
                step()
        else:
            clock = time.perf_counter
            times = [0.0] * len(self.info)
            for k, step in zip(self._where, self.program):
                t0 = clock()
                step()
                times[k] = clock() - t0
            profile.extend(times)
        return self._finish()

    def _run_capture(self, arrays, capture):
        """Every step in order through its unbound function (the slow path), copying each output."""
        env = self._env
        names = {k: name for name, k in self._slot.items()}
        for s, a in zip(self.input_slots, arrays):
            env[s] = a
        for fn, ins, outs, keep in self._slow:
            res = fn(*[env[i] for i in ins])
            for o, j in zip(outs, keep):
                env[o] = res[j]
                capture[names[o]] = _logical(self.graph.values[names[o]], res[j])
        result = self._finish()
        for s, a in self._fixed:            # the bound steps read these very arrays
            env[s] = a
        return result

    def _finish(self):
        env = self._env
        result = [np.array(env[s], copy=True) for s in self.output_slots]
        for s in self._transient:           # drop references to inputs and per-run arrays
            env[s] = None
        return result


def _logical(v, a):
    if v.layout == 'NHWC':
        a = a.transpose(0, 3, 1, 2)
    return np.array(a, order='C', copy=True)


def self_outputs_storage(output_slots, storage):
    return [storage[s] for s in output_slots if storage[s] is not None]
