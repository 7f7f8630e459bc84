"""Quick start: answer with the reference kernels while the compiled ones load.

A new process that loads a model and runs it once spends most of its time before the
first result importing numba and loading its cached machine code (about a second on a
small CPU), while the numpy reference kernels ("cpu") need nothing loaded. With
`Interpreter(model, quick_start=True)` the interpreter prepares its signatures on "cpu"
and runs on them at once; after the first run a `KernelUpgrade` imports the best host
backend in a background thread and prepares every signature again on it, and the
interpreter switches to those plans at the first call after they are ready. The thread
runs no kernel (numba's workqueue threading layer aborts on two threads in parallel code,
and a run on made-up inputs could loop or draw random numbers): the first run after the
switch loads the compiled kernels' cached code. Results before and after the switch agree
as two backends do (within float rounding), not bit for bit.

    upgrade = KernelUpgrade(make_plans)   # make_plans(backend) -> {key: ExecutionPlan}
    upgrade.start()
    if upgrade.finished():
        backend, plans = upgrade.result or (None, None)   # None: stay on "cpu"

A process that forks while an upgrade is under way first waits for it (a child must not
inherit the import locks of a thread it does not have), and at interpreter exit an
unfinished upgrade is told to stop and joined (it stops after the step it is in: a thread
inside numba's import must not outlive the interpreter).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable

from edgerun.runtime.backends import AUTO, CPU, select_backend
from edgerun.runtime.graph import Node, graphs_within
from edgerun.runtime.plan import ExecutionPlan

_log = logging.getLogger("edgerun.runtime")

# Ops whose kernels draw from a generator made at prepare time: a plan made later would
# draw the same numbers again, so a graph with one stays on the backend it started on.
RANDOM_OPS = frozenset({"Bernoulli", "Dropout", "DropoutTraining", "Multinomial", "RandomNormal",
                        "RandomNormalLike", "RandomUniform", "RandomUniformLike"})
_running: weakref.WeakSet[KernelUpgrade] = weakref.WeakSet()


def draws_random_numbers(nodes: Iterable[Node]) -> bool:
    """Whether any of `nodes`, or of the graphs they hold (control-flow bodies), is a
    random-number op (RANDOM_OPS)."""
    nodes = list(nodes)
    return any(n.op_type in RANDOM_OPS for n in nodes) or any(
        n.op_type in RANDOM_OPS for graph in graphs_within(nodes) for n in graph.nodes)


def _wait_for_upgrades() -> None:
    for upgrade in list(_running):
        upgrade.wait_if_started()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_wait_for_upgrades)


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
            _running.add(self)
            self._thread.start()

    def wait_if_started(self) -> None:
        """Block until a started upgrade is done (a fork waits so; the upgrade's own thread,
        should it start a subprocess, does not wait for itself)."""
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join()

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
            if not self._stop.is_set():
                self.result = (backend, plans)
        except Exception as exc:  # noqa: BLE001 - the reference plans keep serving; say why once
            _log.info(f"quick start: staying on the reference kernels ({type(exc).__name__}: {exc})")
        finally:
            atexit.unregister(self.stop)
            _running.discard(self)
