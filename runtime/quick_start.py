"""Quick start: answer with the reference kernels while the compiled ones load.

A new process that loads a model and runs it once spends most of its time before the
first result importing numba and loading its cached machine code (about a second on a
small CPU), while the numpy reference kernels ("cpu") need nothing loaded. With
`Interpreter(model, quick_start=True)` the interpreter prepares its signatures on "cpu"
and runs on them at once; a `KernelUpgrade` loads the best host backend in a background
thread, prepares every signature again on it and runs each plan that changes no state
once on zeros (which loads its cached kernels), and the interpreter switches to those
plans at the first call after they are ready. Results before and after the switch agree
as two backends do (within float rounding), not bit for bit.

    upgrade = KernelUpgrade(make_plans)   # make_plans(backend) -> {key: ExecutionPlan}
    ...
    if upgrade.finished():
        backend, plans = upgrade.result or (None, None)   # None: stay on "cpu"

At interpreter exit an unfinished upgrade is told to stop and joined (it stops after the
step it is in: a thread inside numba's import or LLVM must not outlive the interpreter).
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable, Hashable

import numpy as np

from edgerun.runtime.backends import AUTO, CPU, select_backend
from edgerun.runtime.graph import ValueKind
from edgerun.runtime.plan import ExecutionPlan

_log = logging.getLogger("edgerun.runtime")


class KernelUpgrade:
    """Loads device="auto"'s host backend and prepares plans on it, in a daemon thread.

    `make_plans(backend)` builds the plans (any exception ends the upgrade: `result` stays
    None and the interpreter keeps its reference plans). `result` is (backend, plans) once
    `finished()` says so, or None when there is nothing better than "cpu" (numba is not
    installed) or the upgrade failed or was stopped.
    """

    def __init__(self, make_plans: Callable[[str], dict[Hashable, ExecutionPlan]]) -> None:
        self._make_plans = make_plans
        self._stop = threading.Event()
        self.result: tuple[str, dict[Hashable, ExecutionPlan]] | None = None
        self._thread = threading.Thread(target=self._work, name="edgerun-quick-start", daemon=True)

    def start(self) -> None:
        """Start the thread (once; later calls do nothing)."""
        if self._thread.ident is None:
            atexit.register(self.stop)
            self._thread.start()

    def finished(self) -> bool:
        """Whether the thread is done (successfully or not); never blocks."""
        return self._thread.ident is not None and not self._thread.is_alive()

    def wait(self) -> None:
        """Start the thread if it has not started and block until the upgrade is done."""
        self.start()
        self._thread.join()

    def stop(self) -> None:
        """Ask the thread to stop after its current step and wait for it (if it started)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()

    def _work(self) -> None:
        try:
            backend = select_backend(AUTO)  # imports the compiled kernels (numba) in this thread
            if backend == CPU or self._stop.is_set():
                return
            plans = self._make_plans(backend)
            for plan in plans.values():
                if self._stop.is_set():
                    return
                warm_up(plan)
            if not self._stop.is_set():
                self.result = (backend, plans)
        except Exception as exc:  # noqa: BLE001 - the reference plans keep serving; say why once
            _log.info(f"quick start: staying on the reference kernels ({type(exc).__name__}: {exc})")
        finally:
            atexit.unregister(self.stop)


def warm_up(plan: ExecutionPlan) -> bool:
    """Run `plan` once on zeros of its prepared shapes so its kernels load their compiled
    code now, where nothing waits for it. Only a plan whose runs change nothing and whose
    preparation the zeros cannot change: no variable updates, tensor inputs only, shapes
    known without run-time values. Returns whether it ran; a failing run is ignored (the
    first real run then loads what is left)."""
    prepared = plan.prepared
    if plan.eager or plan.specialize_on or prepared.deferred or prepared.updates or prepared.in_place:
        return False
    infos = plan.input_info
    if any(info.kind != ValueKind.TENSOR or info.dtype.kind not in "biufc" for info in infos.values()):
        return False
    zeros = {name: np.zeros(prepared.shapes[name], infos[name].dtype) for name in infos}
    try:
        with np.errstate(all="ignore"):
            plan.run(zeros)
    except Exception:  # noqa: BLE001 - zeros are not every model's input; the real run will tell
        return False
    return True
