"""The interpreter: load -> verify -> resolve kernels -> prepare -> plan -> invoke.

    it = Interpreter("mlp.erm")
    y = it.run({"x": x})["y"]

Each signature gets its own execution plan (the operators its outputs need,
in model order) and its own arena. Variables are shared by all signatures and
persist across runs. Not thread-safe: use one Interpreter per thread.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerun.runtime.backends import AUTO, CPU, auto_offload, backend, loads_on_first_use, select_backend
from edgerun.runtime.errors import EdgerunError, InputError, MemoryBudgetError, ModelError, WorkBudgetError
from edgerun.runtime.graph import Graph, Value
from edgerun.runtime.loader import load_model
from edgerun.runtime.memory import MemoryReport
from edgerun.runtime.plan import ExecutionPlan, TensorInfo
from edgerun.runtime.profiles import DeviceProfile, get_profile
from edgerun.runtime.quick_start import KernelUpgrade, draws_random_numbers
from edgerun.runtime.writer import serialize

DEFAULT_SIGNATURE = "serving_default"
_log = logging.getLogger("edgerun.runtime")


@dataclass(frozen=True)
class SignatureInfo:
    """Names, kinds, dtypes and declared shapes (-1 = dynamic) of a signature's inputs and outputs."""

    name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


class Interpreter:
    """Runs a model's signatures.

    Args:
        model: a path to an .erm file (memory-mapped), its bytes, or a Graph.
        device: "auto" or a registered backend name ("cpu", "numba", "cuda"; see
            `runtime.backends`). "cuda" runs on an NVIDIA GPU what its kernels claim and the
            rest on the host (`placement` says which); "auto" picks it only when a GPU is
            present and the model is big enough to profit, else the best host backend.
        num_threads: threads for kernels (None = the profile's, else the library
            default). numpy's BLAS pool is process-wide, so this caps it for the
            whole process.
        memory_budget: the most bytes one signature may hold: its arena plus the weights it
            holds (the constants it reads and every variable; see `memory_report`), checked
            before the arena is allocated (None = the profile's, else half the machine's
            physical memory).
        profile: a device profile or the name of a registered one ("host", "rpi4",
            "phone"; see `runtime.profiles`): its thread count, memory budget and work
            budget apply where `num_threads` / `memory_budget` / `work_budget` are not given.
        work_budget: the most multiply-adds (MACs) one run of a signature may take, as
            `runtime.work` estimates them from the prepared shapes (None = the profile's,
            else unlimited). Checked whenever a signature is prepared: at construction,
            by `resize_input` and by a run with new dynamic dimensions.
        quick_start: with device "auto" in a process that has not loaded the compiled
            kernels yet, answer at once on the numpy reference kernels while a background
            thread (started by the first run) loads the compiled ones, then switch to them
            (`backend` says which is in use; results agree within float rounding, not bit
            for bit). For a process's time to its first results: a command-line run, a
            freshly started service. Ignored under a memory budget (explicit or a profile's:
            both sets of plans live until the switch) and for models with random-number
            ops. See `runtime.quick_start`.

    Raises ModelError (malformed model), MemoryBudgetError (a signature's arena and weights
    need more than the budget; it names the parts, the budget and the profile it came from),
    WorkBudgetError (a signature's estimated
    work passes the work budget; it names both and the heaviest node),
    UnsupportedOpError (no kernel for an op), EdgerunError (unknown device or profile,
    a budget below 1). All of them at construction, not at first run.
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes | Graph,
        device: str = "auto",
        num_threads: int | None = None,
        memory_budget: int | None = None,
        profile: str | DeviceProfile | None = None,
        work_budget: int | None = None,
        quick_start: bool = False,
    ) -> None:
        # quick start: "auto" runs on the reference kernels until its compiled ones are loaded
        # (runtime.quick_start), when loading them would be the first thing a run waits for
        quick = quick_start and device == AUTO and loads_on_first_use()
        self.backend = CPU if quick else select_backend(device)
        offload = backend(self.backend).offload
        # the kernels that prepare every step (and run what a device does not): the best host backend's
        self._host_backend = select_backend(AUTO) if offload is not None else self.backend
        self.profile = _as_profile(profile)
        if num_threads is None and self.profile is not None:
            num_threads = self.profile.num_threads
        if memory_budget is None and self.profile is not None:
            memory_budget = self.profile.memory_budget_bytes
        if work_budget is None and self.profile is not None:
            work_budget = self.profile.work_budget_macs
        if num_threads is not None and num_threads < 1:
            raise EdgerunError(f"num_threads must be >= 1, got {num_threads}")
        if work_budget is not None and work_budget < 1:
            raise EdgerunError(f"work_budget must be >= 1 multiply-add, got {work_budget}")
        self.num_threads = num_threads
        self.memory_budget = memory_budget
        self.work_budget = work_budget
        # named in budget errors when the memory budget is the profile's
        self._budget_owner = (f"device profile {self.profile.name!r}" if self.profile is not None
                              and memory_budget == self.profile.memory_budget_bytes else None)
        if num_threads is not None:
            _limit_blas_threads(num_threads)
        # An in-memory Graph goes through the same verifier as a file (one copy of
        # its weights); pass a path for zero-copy loading of large models.
        graph = load_model(serialize(model) if isinstance(model, Graph) else _as_source(model))
        self.graph = graph
        if quick and (memory_budget is not None or draws_random_numbers(graph.nodes)):
            # no quick start under a memory budget (both plan sets live until the switch) or with
            # random-number ops (plans made later would draw the same numbers again)
            quick = False
            self.backend = self._host_backend = select_backend(device)
        self._variables = _variable_storage(graph)
        self._plans: dict[str, ExecutionPlan] = {}
        shared: dict[tuple, ExecutionPlan] = {}  # identical signatures share one plan and arena
        for name, signature in graph.signatures.items():
            key = _signature_key(signature)
            if key not in shared:
                shared[key] = self._make_plan(name, signature)
            self._plans[name] = shared[key]
        on_the_edge = self.profile is not None and self.profile.name != "host"  # a device profile: its CPU
        self._upgrade = KernelUpgrade(self._make_plans) if quick else None
        if offload is None and device == AUTO and shared and not on_the_edge:
            picked = auto_offload(max(plan.work.total for plan in shared.values()))
            if picked is not None:
                if self._upgrade is not None:  # the device's host steps run on the compiled kernels
                    self._upgrade.wait()
                    self._adopt_upgrade()
                    shared = {id(plan): plan for plan in self._plans.values()}
                self.backend, offload = picked, backend(picked).offload
        if offload is not None:
            for plan in shared.values():
                plan.offload_to(offload(plan))
        self.signatures = {
            name: SignatureInfo(name, plan.input_info, plan.output_info)
            for name, plan in self._plans.items()
        }

    def _make_plans(self, host_backend: str) -> dict[tuple, ExecutionPlan]:
        """A plan per distinct signature (identical signatures share one plan and arena) on
        `host_backend`, keyed by `_signature_key`."""
        plans: dict[tuple, ExecutionPlan] = {}
        for name, signature in self.graph.signatures.items():
            key = _signature_key(signature)
            if key not in plans:
                plans[key] = self._make_plan(name, signature, host_backend)
        return plans

    def _adopt_upgrade(self) -> None:
        """Switch to the quick-start upgrade's compiled plans (runtime.quick_start), prepared
        for the shapes the reference plans have now; where one cannot be, stay on the
        reference plans (said in one log line)."""
        upgrade, self._upgrade = self._upgrade, None
        if upgrade is None or upgrade.result is None:
            return
        host_backend, fresh = upgrade.result
        chosen: dict[str, ExecutionPlan] = {}
        for name, signature in self.graph.signatures.items():
            old, new = self._plans[name], fresh[_signature_key(signature)]
            try:
                if not old.prepared.deferred and (new.prepared.deferred or new.prepared.shapes != old.prepared.shapes):
                    new.resize(old.prepared.shapes)
            except EdgerunError as exc:
                _log.info(f"quick start: staying on the reference kernels ({exc})")
                return
            chosen[name] = new
        self._plans, self.backend, self._host_backend = chosen, host_backend, host_backend

    def _make_plan(self, name: str, signature: Any, host_backend: str | None = None) -> ExecutionPlan:
        try:
            return ExecutionPlan(self.graph, name, signature, self._variables, self.memory_budget,
                                 host_backend or self._host_backend, self.work_budget, self.num_threads,
                                 self._budget_owner)
        except MemoryBudgetError as exc:
            if self._budget_owner is None or self._budget_owner in str(exc):
                raise
            raise MemoryBudgetError(f"{exc} ({self._budget_owner})") from exc
        except WorkBudgetError as exc:
            if self.profile is None or self.work_budget != self.profile.work_budget_macs:
                raise
            raise WorkBudgetError(f"{exc} (device profile {self.profile.name!r})") from exc

    def _plan(self, signature: str) -> ExecutionPlan:
        if self._upgrade is not None and self._upgrade.finished():
            self._adopt_upgrade()
        try:
            return self._plans[signature]
        except KeyError:
            known = ", ".join(sorted(self._plans)) or "none"
            raise InputError(f"unknown signature {signature!r}; the model has: {known}") from None

    def run(
        self, inputs: Mapping[str, Any], signature: str = DEFAULT_SIGNATURE
    ) -> dict[str, np.ndarray]:
        """Run `signature` on named inputs; returns its outputs by name (fresh arrays).

        A sequence input or output (`SignatureInfo` kind "sequence") is a list of arrays of
        its element dtype; an optional one None (empty) or what it holds; a sequence of maps
        (kind "sequence_map", an output only: ZipMap's) a list of dicts {label: probability},
        new dicts on every run. An input whose
        shape differs from the prepared one only in dynamic
        dimensions re-prepares the plan automatically. Raises InputError for an
        unknown signature, missing or unexpected inputs, or a wrong dtype, rank or
        shape, naming the input and what was expected; WorkBudgetError (before any
        computing) if the new shapes need more work than the work budget, leaving
        the previous preparation in place.
        """
        outputs = self._plan(signature).run(inputs)
        if self._upgrade is not None:  # quick start: the compiled kernels load once the first results are out
            self._upgrade.start()
        return outputs

    def resize_input(
        self, name: str, shape: tuple[int, ...], signature: str = DEFAULT_SIGNATURE
    ) -> None:
        """Prepare `signature` for a new input shape now (a no-op if unchanged).

        Dimensions declared static must keep their size. Raises InputError for
        an unknown input or an incompatible shape, ModelError if the model cannot
        run at that shape, MemoryBudgetError if its arena and weights need more than
        the memory budget there (before the arena is allocated), WorkBudgetError if it
        needs more work than the work budget (the interpreter stays prepared for the
        previous shape either way).
        """
        self._plan(signature).resize({name: tuple(shape)})

    def resize_inputs(
        self, shapes: Mapping[str, tuple[int, ...]], signature: str = DEFAULT_SIGNATURE
    ) -> None:
        """Prepare `signature` for new shapes of several inputs at once, as `resize_input` does
        for one: inputs whose shapes must agree (a batch of images and its labels) can only
        change together. Fails as `resize_input` does, keeping the previous shapes."""
        self._plan(signature).resize({name: tuple(shape) for name, shape in shapes.items()})

    @property
    def peak_activation_bytes(self) -> int:
        """Arena bytes of the default signature (or the largest arena if there is none)."""
        if DEFAULT_SIGNATURE in self._plans:
            return self._plans[DEFAULT_SIGNATURE].arena_bytes
        return max((p.arena_bytes for p in self._plans.values()), default=0)

    def arena_bytes(self, signature: str = DEFAULT_SIGNATURE) -> int:
        return self._plan(signature).arena_bytes

    def memory_report(self, signature: str = DEFAULT_SIGNATURE) -> MemoryReport:
        """The bytes one run of `signature` holds at its prepared input shapes (dynamic dims at 1
        until a run or `resize_input` sets them): its arena, the constant weights it reads (and
        the tensors folded from them at prepare time) and every variable (shared by all
        signatures), the optimizer's state named apart; see `runtime.memory`. Its total is what
        the memory budget bounds (the plan's own count). InputError for an unknown signature."""
        plan = self._plan(signature)
        optimizer_names = set(_training_metadata(self.graph).get("optimizer_state", ()))
        return MemoryReport(
            signature=signature,
            arena_bytes=plan.arena_bytes,
            weight_bytes=plan.constant_bytes + plan.folded_bytes,
            variable_bytes=plan.variable_bytes,
            optimizer_state_bytes=sum(a.nbytes for v, a in self._variables.items() if v.name in optimizer_names),
        )

    def estimated_macs(self, signature: str = DEFAULT_SIGNATURE) -> int:
        """Estimated multiply-adds of one run of `signature` at its prepared input shapes
        (dynamic dimensions at 1 until a run or `resize_input` sets them), constant-folded
        nodes included; see `runtime.work` for how each op counts. A signature whose shapes
        depend on input values (it prepares on every run) reports its last run that the work
        budget allowed, 0 before one. InputError for an unknown signature."""
        return self._plan(signature).work.total

    def placement(self, signature: str = DEFAULT_SIGNATURE) -> dict[str, str]:
        """Where each planned node of `signature` runs at its current shapes: node name ->
        "device" (the offloading backend's, e.g. the GPU of device="cuda") or "host". On a host
        backend every node is "host". InputError for an unknown signature."""
        plan = self._plan(signature)
        if plan.offload is not None and not plan.eager:
            return plan.offload.placement(plan.prepared)
        return {node.name: "host" for *_, node in plan.prepared.steps}

    def variables(self) -> dict[str, np.ndarray]:
        """Copies of the current values of every variable, by name."""
        return {v.name: array.copy() for v, array in self._variables.items()}


def _as_source(model: Any) -> Any:
    if isinstance(model, str | os.PathLike | bytes | bytearray | memoryview):
        return model if not isinstance(model, str) else Path(model)
    raise EdgerunError(f"model must be a path, bytes or Graph, not {type(model).__name__}")


def _as_profile(profile: str | DeviceProfile | None) -> DeviceProfile | None:
    if profile is None or isinstance(profile, DeviceProfile):
        return profile
    if isinstance(profile, str):
        return get_profile(profile)
    raise EdgerunError(f"profile must be a DeviceProfile or a profile name, not {type(profile).__name__}")


def _signature_key(signature: Any) -> tuple:
    return (tuple((k, id(v)) for k, v in signature.inputs.items()),
            tuple((k, id(v)) for k, v in signature.outputs.items()),
            tuple((id(k), id(v)) for k, v in signature.updates.items()))


def _training_metadata(graph: Graph) -> dict:
    """make_trainable's record of the model's training set-up ({} for an inference model or an
    unreadable record: it only labels memory, it never decides anything)."""
    try:
        record = json.loads(graph.metadata.get("edgerun.training", "{}"))
    except (TypeError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _limit_blas_threads(num_threads: int) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=num_threads, user_api="blas")


def _variable_storage(graph: Graph) -> dict[Value, np.ndarray]:
    """Writable, persistent storage for each variable, initialised from its data."""
    return {v: np.array(v.data, copy=True) for v in graph.values() if v.is_variable}


__all__ = ["DEFAULT_SIGNATURE", "Interpreter", "SignatureInfo", "TensorInfo", "ModelError"]
