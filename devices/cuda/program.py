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
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import cuda

from edgerun.devices.cuda import graphs
from edgerun.devices.cuda.claims import LaunchContext, StepSpec, claim_for
from edgerun.runtime.errors import raise_node_failure

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
    cannot be allocated (the caller runs the plan on the host then)."""

    def __init__(self, plan: Any, prepared: Any, *, use_graphs: bool = True,
                 constants: dict[int, tuple[Any, Any]] | None = None) -> None:
        self.plan = plan
        self.prepared = prepared
        self.stream, cupy_stream = graphs.make_stream()
        self._cupy_stream = cupy_stream
        self.ctx = LaunchContext(self.stream, cupy_stream)
        arena_bytes = prepared.arena_bytes
        self.arena = cuda.device_array(max(arena_bytes, 1), np.uint8)
        self._host_arena = prepared.arena
        self._host_base = prepared.arena_base + (prepared.arena.ctypes.data if prepared.arena is not None else 0)
        self._input_slots = {(id(slots), index): name
                             for name, places in prepared.input_slots.items() for slots, index in places}
        self._variables = {id(a): a for a in plan.variables.values()}
        # id(host constant) -> (the host array, kept so that its id stays its own; its device copy):
        # shared by the programs of one plan, so that weights are uploaded once whatever the shapes
        self._constants = constants if constants is not None else {}
        self.constant_ids: set[int] = set()  # the entries of `_constants` this program reads
        self._inputs: dict[str, Any] = {}  # input name -> device buffer
        self._device_variables: dict[int, Any] = {}  # id(host storage) -> device copy
        self.placement: dict[str, str] = {}
        self._checks: list[tuple[Any, list[_Tensor], Any]] = []  # (check, its inputs, node): run before a run
        self._ops: list[tuple[str, Any, Any]] = []  # (kind, callable, node)
        self._build()
        self._graph = None
        self._capturable = use_graphs and graphs.available() and all(k != HOST for k, *_ in self._ops)
        self._runs = 0

    # ------------------------------------------------------------- build
    def _where(self, steps_list: list, index: int, array: Any) -> _Tensor:
        if array is None:
            return _Tensor("none")
        name = self._input_slots.get((id(steps_list), index))
        if name is not None:
            return _Tensor("input", None, name=name)
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
        inside = 0 <= start and start + array.nbytes <= self.prepared.arena_bytes  # one buffer: in it
        return start if inside and array.flags.c_contiguous else None

    def _build(self) -> None:
        side: dict[tuple, str] = {}  # arena range -> DEVICE | HOST | "both": who holds its latest value
        counts = {DEVICE: 0, HOST: 0}
        host_ops: list[str] = []
        for run, ins, outs, node in self.prepared.steps:
            in_where = [self._where(ins, i, a) for i, a in enumerate(ins)]
            out_where = [self._where(outs, i, a) for i, a in enumerate(outs)]
            device_run = self._claim(run, node, ins, outs, in_where, out_where)
            if device_run is not None:
                for t in in_where:
                    if t.kind == "arena" and side.get(t.key, DEVICE) == HOST:
                        self._ops.append(("upload", self._upload_arena(t), node))
                        side[t.key] = "both"
                if getattr(device_run, "check", None) is not None:
                    self._checks.append((device_run.check, in_where, node))
                dev_ins = [self._device_arg(t) for t in in_where]
                dev_outs = [self._device_arg(t) for t in out_where]
                self._ops.append((DEVICE, _bind(device_run, dev_ins, dev_outs, self.ctx), node))
                for t in out_where:
                    side[t.key] = DEVICE
                self.placement[node.name] = DEVICE
            else:
                downloads = [t for t in in_where if t.kind == "arena" and side.get(t.key, HOST) == DEVICE]
                if downloads:
                    self._ops.append(("download", self._download_arena(downloads), node))
                    for t in downloads:
                        side[t.key] = "both"
                self._ops.append((HOST, _bind_host(run, ins, outs), node))
                for t in out_where:
                    if t.kind == "arena":
                        side[t.key] = HOST
                self.placement[node.name] = HOST
                host_ops.append(node.op_type)
            counts[self.placement[node.name]] += 1
        finals = [self._where([], 0, a) for a in self._read_after_steps()]
        finals = [t for t in finals if t.kind == "arena" and side.get(t.key) == DEVICE]
        unique = list({t.key: t for t in finals}.values())
        self._final_download = self._download_arena(unique) if unique else None
        if host_ops:
            named = ", ".join(sorted(set(host_ops)))
            _log.info(f"signature {self.plan.name!r} on cuda: {counts[DEVICE]} of {len(self.prepared.steps)} "
                      f"steps on the GPU; on the host: {named}")

    def _claim(self, run: Any, node: Any, ins: list, outs: list, in_where: list, out_where: list) -> Any:
        kernel = getattr(run, "__self__", None)
        claim = claim_for(node)
        if claim is None or kernel is None:
            return None
        if any(t.kind != "arena" for t in out_where):  # writes a variable in place, or an unused slot
            return None
        arrays = [*ins, *outs]
        if any(isinstance(a, np.ndarray) and a.dtype.hasobject for a in arrays):
            return None
        if any(a is not None and not isinstance(a, np.ndarray) for a in ins):
            return None
        host_ins = [self._spec_array(t, a) for t, a in zip(in_where, ins, strict=True)]
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
            info = self.plan.input_info[where.name]
            return np.empty(self.prepared.shapes[where.name], info.dtype)
        return array

    def _device_arg(self, where: _Tensor) -> Any:
        if where.kind == "none":
            return None
        if where.kind == "arena":
            return self._arena_view(where.offset, where.host)
        if where.kind == "input":
            if where.name not in self._inputs:
                info = self.plan.input_info[where.name]
                self._inputs[where.name] = cuda.device_array(self.prepared.shapes[where.name], info.dtype)
            return self._inputs[where.name]
        if where.kind == "variable":
            key = id(where.host)
            if key not in self._device_variables:
                self._device_variables[key] = cuda.device_array(where.host.shape, where.host.dtype)
            return self._device_variables[key]
        key = id(where.host)
        if key not in self._constants:
            self._constants[key] = (where.host, cuda.to_device(np.ascontiguousarray(where.host)))
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

    def _read_after_steps(self) -> list:
        """The host arrays the plan reads once the steps ran."""
        prepared = self.prepared
        reads = [s for s in prepared.output_sources.values() if isinstance(s, np.ndarray)]
        reads += [s for s, _ in prepared.updates if isinstance(s, np.ndarray)]
        reads += [a for a in prepared.tail_known.values() if isinstance(a, np.ndarray)]
        return reads

    # --------------------------------------------------------------- run
    def run(self) -> None:
        """Run the steps (the plan has bound this run's inputs into them). Raises ModelError
        naming the node whose step failed, as the host loop does; InputError (a device step's
        check, before anything runs) for data the host kernel would refuse."""
        self._check_inputs()
        self._upload_inputs()
        if self._graph is not None:
            self._graph.replay(self.stream)
        elif self._capturable and self._runs >= 1:
            self._graph = graphs.capture(self.stream, self._device_ops(), self._cupy_stream)
            self._graph.replay(self.stream)
        else:
            node = None
            try:
                for _, op, node in self._ops:  # noqa: B007 - node names a failure
                    op()
            except Exception as exc:
                raise_node_failure(node, exc)
        if self._final_download is not None:
            self._final_download()
        else:
            self.stream.synchronize()
        self._runs += 1

    def _check_inputs(self) -> None:
        if not self._checks:
            return
        bound = self._bound_inputs()
        for check, in_where, node in self._checks:
            host = [bound[t.name] if t.kind == "input" else t.host if t.kind in ("constant", "variable") else None
                    for t in in_where]
            try:
                check(host)
            except Exception as exc:
                raise_node_failure(node, exc)

    def _bound_inputs(self) -> dict[str, Any]:
        """This run's signature inputs as the plan bound them into the steps."""
        return {name: places[0][0][places[0][1]] for name, places in self.prepared.input_slots.items()}

    def _device_ops(self) -> list:
        return [op for kind, op, _ in self._ops if kind == DEVICE]

    def _upload_inputs(self) -> None:
        if self._inputs:
            bound = self._bound_inputs()
            for name, device in self._inputs.items():
                device.copy_to_device(np.ascontiguousarray(bound[name]), stream=self.stream)
        for key, device in self._device_variables.items():
            device.copy_to_device(self._variables[key], stream=self.stream)


def _bind(device_run: Any, ins: list, outs: list, ctx: LaunchContext) -> Any:
    return lambda: device_run(ins, outs, ctx)


def _bind_host(run: Any, ins: list, outs: list) -> Any:
    return lambda: run(ins, outs)


class CudaRunner:
    """The cuda backend's offload for one ExecutionPlan (runtime.backends.Backend.offload):
    a DeviceProgram per prepared plan, the last few kept (a plan keeps a few preparations for
    the input shapes it saw recently)."""

    KEPT = 4

    def __init__(self, plan: Any) -> None:
        self.plan = plan
        self._programs: dict[int, tuple[Any, DeviceProgram]] = {}
        self._constants: dict[int, tuple[Any, Any]] = {}  # weights on the device, shared by the programs

    def program(self, prepared: Any) -> DeviceProgram:
        entry = self._programs.get(id(prepared))
        if entry is not None and entry[0] is prepared:
            return entry[1]
        if len(self._programs) >= self.KEPT:
            self._programs.pop(next(iter(self._programs)))
            kept = set().union(*(p.constant_ids for _, p in self._programs.values()))
            for key in set(self._constants) - kept:  # folded values of preparations gone
                del self._constants[key]
        program = DeviceProgram(self.plan, prepared, constants=self._constants)
        self._programs[id(prepared)] = (prepared, program)
        return program

    def run_steps(self, prepared: Any) -> None:
        self.program(prepared).run()

    def placement(self, prepared: Any) -> dict[str, str]:
        if not prepared.steps:
            return {}
        return dict(self.program(prepared).placement)
