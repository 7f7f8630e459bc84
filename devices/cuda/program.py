"""A prepared plan on the GPU: device arena, weights uploaded once, steps placed and run.

The host plan (runtime.plan) has prepared every step and placed its tensors in the host
arena. A DeviceProgram mirrors that arena on the GPU at the same planned offsets (the same
planner, lifetimes and alignment), uploads the constants the device steps read once, and
offers each step to the device kernels (devices.cuda.claims). A step no kernel claims runs
on the host kernels over the host arena: the values it reads that the GPU made are copied
down first, and what it makes is copied up when a later device step reads it. The copies are
decided once, when the program is built, by following which side last wrote each tensor.

    program = DeviceProgram(plan, prepared)   # the plan's arena, steps and variables
    program.run()                             # after the plan bound this run's inputs
    program.placement                         # node name -> "device" | "host"

A run uploads the signature inputs (and the variables) the device steps read, runs the steps
in order and leaves every value the plan reads after its steps (outputs, variable updates,
an eager tail's inputs) valid in the host arena. Variables live on the host (save, export and
federated rounds read them there): a train step uploads them and its updates come back down.
With every step on the device, a real GPU and CuPy, the steps of a run are captured into a
CUDA graph after the first run and replayed (devices.cuda.graphs).
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import cuda

from edgerun.devices.cuda import graphs
from edgerun.devices.cuda.claims import LaunchContext, StepSpec, claim_for
from edgerun.runtime.errors import EdgerunError, ModelError, raise_node_failure
from edgerun.runtime.plan import run_steps

_log = logging.getLogger("edgerun.devices.cuda")

DEVICE = "device"
HOST = "host"


@dataclass
class _Tensor:
    """Where one step argument lives: an arena range, an input, a variable or a constant."""

    kind: str  # "arena" | "input" | "variable" | "constant" | "none"
    host: Any = None  # host array (None for an omitted input)
    offset: int = 0  # planned offset in the arena
    name: str = ""  # input name

    @property
    def key(self) -> tuple:
        return (self.offset, self.host.nbytes) if self.kind == "arena" else (self.kind, id(self.host))


class DeviceProgram:
    """One prepared plan's steps on the GPU. Raises what numba raises when the device memory
    cannot be allocated (CudaRunner then runs that preparation on the host).

    It holds what it needs of the plan (its name, input declarations and variables), not the
    plan: the plan holds the preparation that holds the program, and no cycle keeps the GPU
    memory alive after the plan is gone."""

    def __init__(self, plan: Any, prepared: Any, *, use_graphs: bool = True,
                 constants: dict[int, tuple[Any, Any]] | None = None) -> None:
        self.name, self.input_info = plan.name, plan.input_info
        # what it reads of the preparation, which holds it (prepared.offloaded): no cycle
        self.prepared = weakref.ref(prepared)
        self._arena_bytes, self._shapes = prepared.arena_bytes, prepared.shapes
        self._input_places = prepared.input_slots  # lists the plan binds each run's inputs into
        self.stream, cupy_stream = graphs.make_stream()
        self._cupy_stream = cupy_stream
        self.ctx = LaunchContext(self.stream, cupy_stream)
        arena_bytes = prepared.arena_bytes
        self.arena = cuda.device_array(max(arena_bytes, 1), np.uint8)
        self._host_arena = prepared.arena
        self._host_base = prepared.arena_base + (prepared.arena.ctypes.data if prepared.arena is not None else 0)
        self._input_slots = {(id(slots), index): name
                             for name, places in prepared.input_slots.items() for slots, index in places}
        self._variables = {id(a): a for a in plan.variables.values()}  # the host storage, shared
        # id(host constant) -> (the host array, kept so that its id stays its own; its device copy):
        # shared by the programs of one plan, so that weights are uploaded once whatever the shapes
        self._constants = constants if constants is not None else {}
        self.constant_ids: set[int] = set()  # the entries of `_constants` this program reads
        self._inputs: dict[str, Any] = {}  # input name -> device buffer
        self._device_variables: dict[int, Any] = {}  # id(host storage) -> device copy
        self.placement: dict[str, str] = {}
        self._checks: list[tuple[Any, list[_Tensor], Any]] = []  # (check, its inputs, node): run before a run
        self._ops: list[tuple[str, Any, Any]] = []  # (kind, callable, node)
        self._build(prepared)
        self._graph = None
        self._capturable = use_graphs and graphs.available() and all(k != HOST for k, *_ in self._ops)
        self._runs = 0
        # the weights went up through the legacy default stream, which a CuPy stream (non-blocking)
        # does not wait for: make sure they are there before the first launch reads them
        cuda.synchronize()

    # ------------------------------------------------------------- build
    def _where(self, steps_list: list, index: int, array: Any) -> _Tensor:
        name = self._input_slots.get((id(steps_list), index))  # not bound before the first run
        if name is not None:
            return _Tensor("input", None, name=name)
        if array is None:
            return _Tensor("none")
        if id(array) in self._variables:
            return _Tensor("variable", array)
        offset = self._arena_offset(array)
        if offset is not None:
            return _Tensor("arena", array, offset)
        return _Tensor("constant", array)

    def _arena_offset(self, array: Any) -> int | None:
        if self._host_arena is None or not isinstance(array, np.ndarray) or array.nbytes == 0:
            return None
        start = array.__array_interface__["data"][0] - self._host_base
        inside = 0 <= start and start + array.nbytes <= self._arena_bytes  # one buffer: in it
        return start if inside and array.flags.c_contiguous else None

    def _build(self, prepared: Any) -> None:
        # arena range (offset, nbytes) -> DEVICE | HOST | "both": who holds the latest value of the
        # tensor that lives there now. A write forgets every other range it overlaps, so a read of
        # bytes that another tensor has taken since (a shape-only input, read after its lifetime)
        # finds nothing to copy, and no copy can overwrite a live tensor with stale bytes.
        side = _Sides()
        counts = {DEVICE: 0, HOST: 0}
        host_ops: list[str] = []
        for run, ins, outs, node in prepared.steps:
            in_where = [self._where(ins, i, a) for i, a in enumerate(ins)]
            out_where = [self._where(outs, i, a) for i, a in enumerate(outs)]
            shape_only = set(getattr(getattr(run, "__self__", None), "shape_only_inputs", ()) or ())
            read = [t for i, t in enumerate(in_where) if t.kind == "arena" and i not in shape_only]
            device_run = self._claim(run, node, ins, outs, in_where, out_where)
            if device_run is not None:
                for t in read:
                    if side.get(t.key, DEVICE) == HOST:
                        self._ops.append(("upload", self._upload_arena(t), node))
                        side[t.key] = "both"
                if getattr(device_run, "check", None) is not None:
                    self._checks.append((device_run.check, in_where, node))
                dev_ins = [self._device_arg(t) for t in in_where]
                dev_outs = [self._device_arg(t) for t in out_where]
                self._ops.append((DEVICE, _bind(device_run, dev_ins, dev_outs, self.ctx), node))
                for t in out_where:
                    side.write(t.key, DEVICE)
                self.placement[node.name] = DEVICE
            else:
                downloads = [t for t in read if side.get(t.key, HOST) == DEVICE]
                if downloads:
                    self._ops.append(("download", self._download_arena(downloads), node))
                    for t in downloads:
                        side[t.key] = "both"
                self._ops.append((HOST, _bind_host(run, ins, outs), node))
                for t in out_where:
                    if t.kind == "arena":
                        side.write(t.key, HOST)
                self.placement[node.name] = HOST
                host_ops.append(node.op_type)
            counts[self.placement[node.name]] += 1
        finals = [self._where([], 0, a) for a in _read_after_steps(prepared)]
        finals = [t for t in finals if t.kind == "arena" and side.get(t.key) == DEVICE]
        unique = list({t.key: t for t in finals}.values())
        self._final_download = self._download_arena(unique) if unique else None
        if host_ops:
            named = ", ".join(sorted(set(host_ops)))
            _log.info(f"signature {self.name!r} on cuda: {counts[DEVICE]} of {len(prepared.steps)} "
                      f"steps on the GPU; on the host: {named}")

    def _claim(self, run: Any, node: Any, ins: list, outs: list, in_where: list, out_where: list) -> Any:
        kernel = getattr(run, "__self__", None)
        claim = claim_for(node)
        if claim is None or kernel is None:
            return None
        if any(t.kind != "arena" for t in out_where):  # writes a variable in place, or an unused slot
            return None
        host_ins = [self._spec_array(t, a) for t, a in zip(in_where, ins, strict=True)]
        if any(a is not None and not isinstance(a, np.ndarray) for a in host_ins):
            return None
        if any(isinstance(a, np.ndarray) and a.dtype.hasobject for a in [*host_ins, *outs]):
            return None
        step = StepSpec(node, kernel, host_ins, list(outs), [t.kind == "constant" for t in in_where],
                        [t.kind in ("constant", "input", "variable") for t in in_where])
        try:
            return claim(step)
        except Exception as exc:  # noqa: BLE001 - a claim that breaks leaves the step on the host
            _log.warning(f"cuda: the claim for node {node.name!r} ({node.op_type}) failed ({exc}); "
                         "it runs on the host")
            return None

    def _spec_array(self, where: _Tensor, array: Any) -> Any:
        if where.kind == "input":  # not bound at build time: its prepared shape and dtype
            info = self.input_info[where.name]
            return np.empty(self._shapes[where.name], info.dtype)
        return array

    def _device_arg(self, where: _Tensor) -> Any:
        if where.kind == "none":
            return None
        if where.kind == "arena":
            return self._arena_view(where.offset, where.host)
        if where.kind == "input":
            if where.name not in self._inputs:
                info = self.input_info[where.name]
                self._inputs[where.name] = cuda.device_array(self._shapes[where.name], info.dtype)
            return self._inputs[where.name]
        if where.kind == "variable":
            key = id(where.host)
            if key not in self._device_variables:
                self._device_variables[key] = cuda.device_array(where.host.shape, where.host.dtype)
            return self._device_variables[key]
        key = id(where.host)
        if key not in self._constants:
            self._constants[key] = (where.host, cuda.to_device(np.require(where.host, requirements="C")))
        self.constant_ids.add(key)
        return self._constants[key][1]

    def _arena_view(self, offset: int, host: np.ndarray) -> Any:
        if host.nbytes == 0:
            return cuda.device_array(host.shape, host.dtype)
        return self.arena[offset: offset + host.nbytes].view(host.dtype).reshape(host.shape)

    def _upload_arena(self, where: _Tensor) -> Any:
        device, host, stream = self._arena_view(where.offset, where.host), where.host, self.stream
        return lambda: device.copy_to_device(host, stream=stream)

    def _download_arena(self, tensors: list[_Tensor]) -> Any:
        pairs = [(self._arena_view(t.offset, t.host), t.host) for t in tensors]
        stream = self.stream

        def download() -> None:
            for device, host in pairs:
                device.copy_to_host(host, stream=stream)
            stream.synchronize()

        return download

    # --------------------------------------------------------------- run
    def run(self) -> None:
        """Run the steps (the plan has bound this run's inputs into them). Raises ModelError
        naming the node whose step failed, as the host loop does; InputError (a device step's
        check, before anything runs) for data the host kernel would refuse."""
        bound = self._bound_inputs()
        self._check_inputs(bound)
        node = None
        try:
            self._upload_inputs(bound)
            if self._graph is not None:
                self._graph.replay(self.stream)
            elif self._capturable and self._runs >= 1:
                self._graph = graphs.capture(self.stream, self._device_ops(), self._cupy_stream)
                self._graph.replay(self.stream)
            else:
                for _, op, node in self._ops:  # noqa: B007 - node names a failure
                    op()
                node = None
            if self._final_download is not None:
                self._final_download()
            else:
                self.stream.synchronize()
        except Exception as exc:
            if node is not None:
                raise_node_failure(node, exc)
            if isinstance(exc, EdgerunError):
                raise
            # an asynchronous kernel fault shows at the next transfer or synchronization
            raise ModelError(f"signature {self.name!r} failed on the GPU: {type(exc).__name__}: {exc}") from exc
        self._runs += 1

    def _check_inputs(self, bound: dict[str, Any]) -> None:
        for check, in_where, node in self._checks:
            host = [bound[t.name] if t.kind == "input" else t.host if t.kind in ("constant", "variable") else None
                    for t in in_where]
            try:
                check(host)
            except Exception as exc:
                raise_node_failure(node, exc)

    def _bound_inputs(self) -> dict[str, Any]:
        """This run's signature inputs as the plan bound them into the steps."""
        return {name: places[0][0][places[0][1]] for name, places in self._input_places.items()}

    def _device_ops(self) -> list:
        return [op for kind, op, _ in self._ops if kind == DEVICE]

    def _upload_inputs(self, bound: dict[str, Any]) -> None:
        for name, device in self._inputs.items():
            device.copy_to_device(np.ascontiguousarray(bound[name]), stream=self.stream)
        for key, device in self._device_variables.items():
            device.copy_to_device(self._variables[key], stream=self.stream)


def _read_after_steps(prepared: Any) -> list:
    """The host arrays the plan reads once the steps ran: outputs, variable updates, an eager
    tail's inputs."""
    reads = [s for s in prepared.output_sources.values() if isinstance(s, np.ndarray)]
    reads += [s for s, _ in prepared.updates if isinstance(s, np.ndarray)]
    reads += [a for a in prepared.tail_known.values() if isinstance(a, np.ndarray)]
    return reads


def _bind(device_run: Any, ins: list, outs: list, ctx: LaunchContext) -> Any:
    return lambda: device_run(ins, outs, ctx)


def _bind_host(run: Any, ins: list, outs: list) -> Any:
    return lambda: run(ins, outs)


_ON_HOST = object()  # a preparation's offloaded state when its program could not be made


class _Sides(dict):
    """Arena range (offset, nbytes) -> which side holds the latest value of the tensor there."""

    def write(self, key: tuple[int, int], where: str) -> None:
        """The tensor at `key` was written on `where`: every other range it overlaps is stale."""
        start, end = key[0], key[0] + key[1]
        for other in [k for k in self if k != key and k[0] < end and start < k[0] + k[1]]:
            del self[other]
        self[key] = where


class CudaRunner:
    """The cuda backend's offload for one ExecutionPlan (runtime.backends.Backend.offload).

    Each preparation of the plan gets its DeviceProgram when it first runs, kept on the
    preparation itself (`prepared.offloaded`): it lives exactly as long as the plan keeps
    that preparation (the plan's own cache, within its memory budget). Weights and folded
    constants are uploaded once and shared by the programs alive. A preparation whose program
    cannot be made (the GPU's memory is full) runs on the host, said once in the log.
    """

    def __init__(self, plan: Any) -> None:
        self._plan = weakref.ref(plan)  # the plan holds this runner: no cycle
        self._programs: weakref.WeakSet[DeviceProgram] = weakref.WeakSet()
        self._constants: dict[int, tuple[Any, Any]] = {}  # id(host) -> (host, device copy)
        self._warned = False

    def program(self, prepared: Any) -> DeviceProgram | None:
        """The program of `prepared` (made now if it has none); None when it runs on the host."""
        if prepared.offloaded is not None:
            return prepared.offloaded if prepared.offloaded is not _ON_HOST else None
        live = set().union(*(p.constant_ids for p in self._programs))
        for key in set(self._constants) - live:  # folded values of preparations gone
            del self._constants[key]
        try:
            program = DeviceProgram(self._plan(), prepared, constants=self._constants)
        except EdgerunError:
            raise
        except Exception as exc:  # noqa: BLE001 - out of GPU memory, a driver error: the host can still run it
            prepared.offloaded = _ON_HOST
            if not self._warned:
                self._warned = True
                _log.warning(f"cuda: signature {self._plan().name!r} runs on the host at these shapes: "
                             f"its program could not be made on the GPU ({type(exc).__name__}: {exc})")
            return None
        prepared.offloaded = program
        self._programs.add(program)
        return program

    def run_steps(self, prepared: Any) -> None:
        """Run `prepared`'s steps: on the GPU through its program, on the host where it has none."""
        program = self.program(prepared) if prepared.steps else None
        if program is not None:
            program.run()
        else:
            run_steps(prepared.steps)

    def placement(self, prepared: Any) -> dict[str, str]:
        program = self.program(prepared) if prepared.steps else None
        if program is None:
            return {node.name: HOST for *_, node in prepared.steps}
        return dict(program.placement)
