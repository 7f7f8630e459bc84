"""How the numba backend's parallel loops share the cores with BLAS.

Compiled kernels run their loops on numba's OpenMP pool, and so do the convolutions' matrix
products (devices.numba_blas: OpenBLAS called single-threaded from numba's threads). A sleeping
OpenMP worker takes 60-80 us to wake on the 2-vCPU machines we measure on, which a mobile CNN
pays at every one of its ~100 parallel loops; a worker spinning without end (OpenMP's default
after a loop: 300,000 spins, ACTIVE: 30 billion) steals the core that OpenBLAS's own threads
need for the products that still run there (a 1x1 convolution on OpenBLAS's pool took 8 ms
instead of 0.3 ms that way). So the backend asks for the ACTIVE policy with a short spin
(GOMP_SPINCOUNT 10,000: tens to a few hundred microseconds), long enough to bridge the gap
between two kernels of a run, short enough that idle workers sleep between runs — unless the
user chose a policy or a spin count. MobileNetV2, 2 threads: 12.2 ms passive, 9.0 ms with the
short spin, 13.2 ms with 1,000,000 spins. It must be set before the OpenMP runtime loads, which
is the first parallel call, after this import.

OpenBLAS's own workers (numpy's, pthreads) spin the same way after every product, for 2^28 clock
ticks by default (about 0.1 s), so a Conv's compiled epilogue right after its matrix product ran
beside a spinning BLAS worker on the other core: EfficientNet-B0 at batch 8 took 220 ms instead
of 145 here, and a batch-1 run burned 40 % more CPU time than it used. The backend therefore
sets OPENBLAS_THREAD_TIMEOUT to its minimum unless the user set it, and restarts the loaded
OpenBLAS's thread pool so that the setting applies (OpenBLAS reads it when its threads start;
numpy loaded it before this module) — only while the main thread is the process's only thread:
a product running in another thread when its workers exit would wait for them forever.

    threads = thread_count(interpreter_num_threads)   # at prepare
    use_threads(threads); compiled_parallel_kernel(...)  # at run
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from functools import cache

import numba

from edgerun.devices.host import physical_cores

OMP_SPIN_COUNT = "10000"
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    if sys.platform.startswith("linux"):  # numba's OpenMP pool is GNU libgomp's, which GOMP_SPINCOUNT bounds
        os.environ["OMP_WAIT_POLICY"], os.environ["GOMP_SPINCOUNT"] = "ACTIVE", OMP_SPIN_COUNT
    else:  # elsewhere (LLVM's or Intel's OpenMP) ACTIVE spins for 200 ms or more: workers sleep instead
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

BLAS_THREAD_TIMEOUT = "4"  # OpenBLAS's minimum: 2^4 ticks of spinning before an idle worker sleeps


def quiet_blas_workers(restart: bool = True) -> bool:
    """Make idle OpenBLAS workers sleep at once instead of spinning, unless the user set
    OPENBLAS_THREAD_TIMEOUT: the variable for OpenBLAS libraries loaded later, and (with
    `restart`) a restart of the pools of those already loaded (pthreads builds; the next
    parallel product starts the workers again). True when a loaded pool was restarted (or,
    without `restart`, when one would have been)."""
    if "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        return False
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = BLAS_THREAD_TIMEOUT
    return restart_blas_pools() if restart else bool(_restartable_pools())


def restart_blas_pools() -> bool:
    """Restart the loaded OpenBLAS pools (pthreads builds) so that they read the environment
    again; True when one was. Never while another thread is inside one of their products:
    that product would wait for workers that have exited."""
    restarted = False
    for read_env, shutdown in _restartable_pools():
        read_env()  # the new timeout into OpenBLAS's copy of the environment
        shutdown()  # the workers exit; the next parallel call starts them with the new timeout
        restarted = True
    return restarted


def _restartable_pools() -> list[tuple]:
    from threadpoolctl import threadpool_info

    pools = []
    for info in threadpool_info():
        if info.get("internal_api") != "openblas" or info.get("threading_layer") != "pthreads":
            continue
        try:
            lib = ctypes.CDLL(info["filepath"])
            pools.append((lib.openblas_read_env, lib.blas_thread_shutdown_))
        except (OSError, AttributeError):  # another build: leave it as it is
            continue
    return pools


def _alone() -> bool:
    """Whether this is the main thread and no other Python thread exists, so none can be
    inside an OpenBLAS product (numba's workers call OpenBLAS only for a kernel that a Python
    thread is running): only then may the pools restart."""
    return threading.current_thread() is threading.main_thread() and threading.active_count() == 1


# The pools restart now when this is the process's only thread (the usual case: a script that
# imports edgerun and loads a model). Otherwise (a quick-start upgrade importing this in the
# background, a service loading models beside worker threads) another thread may be inside a
# product, which would then wait forever for workers that have exited: the restart waits for a
# compiled kernel started on the main thread while it is the only one (`use_threads`), and
# never happens in a process that always has other threads (idle workers then spin briefly
# after products, as before this module).
_restart_pending = quiet_blas_workers(restart=False)
if _restart_pending and _alone():
    _restart_pending = False
    restart_blas_pools()


# Below this much work (multiply-adds or elements touched) a kernel runs on the calling thread
# alone: handing out the loop costs more than it saves. With workers that sleep at once this
# was 1 << 19 (a wake costs 60-80 us); with the short spin they are awake within a run, and
# 1 << 15 made MobileNetV3-Small and ShuffleNetV2 10 % faster at 2 threads than 1 << 19 did.
PARALLEL_MIN_WORK = 1 << 15


def thread_count(requested: int | None, work: int | None = None) -> int:
    """Threads a compiled parallel loop may use: `requested` (the interpreter's num_threads)
    capped at numba's pool size, None meaning one per physical core (SMT siblings share one
    core's arithmetic units); 1 when `work` (the kernel's multiply-adds or elements) is under
    PARALLEL_MIN_WORK."""
    pool = numba.config.NUMBA_NUM_THREADS
    if work is not None and work < PARALLEL_MIN_WORK:
        return 1
    return min(pool, _physical_cores()) if requested is None else max(1, min(int(requested), pool))


@cache
def _physical_cores() -> int:
    return physical_cores()


_chosen = threading.local()


def use_threads(count: int) -> None:
    """Let the compiled parallel loops this thread starts use `count` threads (numba's setting
    is per calling thread). Cheap when unchanged, so kernels call it before every parallel loop;
    setting it inside compiled code instead would keep numba from caching that code on disk."""
    global _restart_pending
    if _restart_pending and _alone():
        _restart_pending = False
        restart_blas_pools()
    if getattr(_chosen, "count", None) != count:
        numba.set_num_threads(count)
        _chosen.count = count
