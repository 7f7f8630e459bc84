"""The backend registry: which kernel sets an interpreter may run on, and which one
`device="auto"` picks.

"cpu" (the numpy reference kernels) is always here. Other backends live above
the runtime (`edgerun.devices`) and register themselves when imported; the root
package `edgerun` imports `edgerun.devices`, so every user of `edgerun.runtime`
sees them. The runtime never imports a backend itself: it calls the loader the
backend registered.

    register_backend("numba", load=_import_numba_kernels, priority=10, requires="numba")
    select_backend("auto")  # "numba" when its loader succeeds, else "cpu" (saying so once)

A backend that runs steps somewhere other than the host (a GPU) registers an `offload`: the
plans are made with the host's kernels (the best host backend's: they prepare every step and
run what the device cannot) and the offload then runs each prepared plan's steps, placing
what it can on the device. `device="auto"` picks such a backend only when its `auto_pick`
says so for the model's estimated multiply-adds (a GPU is present and the model is big
enough to profit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from edgerun.runtime.errors import EdgerunError

CPU = "cpu"
AUTO = "auto"

_log = logging.getLogger("edgerun.runtime")


@dataclass(frozen=True)
class Backend:
    """A registered backend.

    `load` makes its kernels available (imports the module that registers them) and
    raises ImportError when they cannot be; None means nothing to load. `device="auto"`
    tries backends from the highest `priority` down. A `reserved` name belongs to a
    backend still to come: asking for it is an error that says so. `requires` names
    what to pip-install when `load` fails (e.g. "numba"); the messages say so.
    """

    name: str
    load: Callable[[], object] | None = None
    priority: int = 0
    reserved: bool = False
    requires: str = ""
    # for a backend that runs plans off the host: offload(plan) -> an object whose
    # run_steps(prepared) runs a prepared plan's steps (see runtime.plan.ExecutionPlan.offload)
    offload: Callable[[object], object] | None = None
    # whether device="auto" should offload a model of this many estimated multiply-adds here
    auto_pick: Callable[[int], bool] | None = None


_BACKENDS: dict[str, Backend] = {CPU: Backend(CPU)}
_warned_cpu_only = False
_warned_fallback: set[str] = set()  # backends whose failed load `device="auto"` has reported
_loaded: set[str] = {CPU}  # backends whose kernels have loaded in this process


def register_backend(
    name: str,
    load: Callable[[], object] | None = None,
    priority: int = 0,
    *,
    reserved: bool = False,
    requires: str = "",
    offload: Callable[[object], object] | None = None,
    auto_pick: Callable[[int], bool] | None = None,
) -> None:
    """Add (or replace) the backend `name`; see `Backend`. ValueError for "auto" or "cpu",
    which the runtime owns, and for an offloading backend with a priority above "cpu"'s
    (device="auto" reaches those only through `auto_pick`)."""
    if name in (AUTO, CPU) or not name:
        raise ValueError(f"backend name {name!r} is reserved by the runtime")
    if offload is not None and priority >= 0:
        raise ValueError(f"offloading backend {name!r} needs a negative priority")
    _BACKENDS[name] = Backend(name, load, priority, reserved, requires, offload, auto_pick)


def backend(name: str) -> Backend:
    """The registered backend `name` (KeyError when there is none)."""
    return _BACKENDS[name]


def auto_offload(macs: int) -> str | None:
    """The offloading backend device="auto" should run a model of `macs` estimated
    multiply-adds on, None for none (its `auto_pick` decides; a failing one counts as no)."""
    for candidate in sorted(_BACKENDS.values(), key=lambda b: -b.priority):
        if candidate.offload is None or candidate.auto_pick is None or candidate.reserved:
            continue
        try:
            wanted = bool(candidate.auto_pick(macs))
        except Exception:  # noqa: BLE001 - probing a device must never break loading a model
            continue
        if wanted and _load_failure(candidate) is None:
            return candidate.name
    return None


def loads_on_first_use() -> bool:
    """Whether select_backend("auto") would start by loading kernels: the backend it tries
    first has not loaded in this process yet (it may still fail to). Never loads anything."""
    names = backend_names()
    return bool(names) and names[0] not in _loaded and _BACKENDS[names[0]].load is not None


def backend_names(*, reserved: bool = False) -> list[str]:
    """Registered backends, most preferred first; with `reserved`, only the reserved ones."""
    chosen = [b for b in _BACKENDS.values() if b.reserved == reserved]
    return [b.name for b in sorted(chosen, key=lambda b: -b.priority)]


def select_backend(device: str) -> str:
    """The backend to run on for a `device` request, with its kernels loaded.

    "auto" gives the registered backend of highest priority whose kernels load ("cpu"
    when none does); any other registered name gives itself. Raises EdgerunError for a
    reserved name (not implemented yet), for a backend whose kernels fail to load, and
    for an unknown name; each message lists the names that work.
    """
    available = ", ".join(repr(name) for name in (AUTO, *backend_names()))
    if device == AUTO:
        return _auto()
    backend = _BACKENDS.get(device)
    if backend is None:
        valid = ", ".join(repr(name) for name in (AUTO, *backend_names(), *backend_names(reserved=True)))
        raise EdgerunError(f"unknown device {device!r}: valid devices are {valid} (available now: {available})")
    if backend.reserved:
        raise EdgerunError(f"device {device!r} is not available yet: use one of {available}")
    failure = _load_failure(backend)
    if failure is not None:
        raise EdgerunError(f"device {device!r} is unavailable: its kernels failed to import "
                           f"({failure}){_install_hint(backend)}") from failure
    return device


def _auto() -> str:
    """The first backend, by priority, whose kernels load. The first time a backend fails to
    load here, one warning names it, why, what `auto` runs on instead and what to install."""
    global _warned_cpu_only
    names = backend_names()
    if names == [CPU] and not _warned_cpu_only:
        _warned_cpu_only = True
        _log.warning("no backend besides 'cpu' is registered (import edgerun.devices to register them): "
                     "device 'auto' runs on 'cpu'")
    failed: list[tuple[Backend, ImportError]] = []
    for name in names:
        backend = _BACKENDS[name]
        failure = _load_failure(backend)
        if failure is None:
            _report_fallback(failed, name)
            return name
        failed.append((backend, failure))
    raise AssertionError("unreachable: 'cpu' has nothing to load")


def _report_fallback(failed: list[tuple[Backend, ImportError]], chosen: str) -> None:
    """Warn once per process for the backends in `failed` not reported yet (one line)."""
    new = [(backend, failure) for backend, failure in failed if backend.name not in _warned_fallback]
    if not new:
        return
    _warned_fallback.update(backend.name for backend, _ in new)
    what = "; ".join(f"backend {backend.name!r} is unavailable ({failure}){_install_hint(backend)}"
                     for backend, failure in new)
    kernels = " (the numpy reference kernels)" if chosen == CPU else ""
    _log.warning(f"device 'auto' runs on {chosen!r}{kernels}: {what}")


def _install_hint(backend: Backend) -> str:
    return f": pip install {backend.requires} for its kernels" if backend.requires else ""


def _load_failure(backend: Backend) -> ImportError | None:
    """None when the backend's kernels are available (loading them now if they are not yet),
    else the ImportError its loader raised (any other error of a native library that cannot
    load, as an ImportError). A failed load is tried again next time."""
    if backend.load is None:
        return None
    try:
        backend.load()
    except ImportError as error:
        return error
    except Exception as error:  # noqa: BLE001 - a native library that cannot load: llvmlite under an
        # address-space cap fails with OSError, MemoryError or SystemError depending on where it runs out
        failure = ImportError(f"{type(error).__name__}: {error}")
        failure.__cause__ = error
        return failure
    _loaded.add(backend.name)
    return None
