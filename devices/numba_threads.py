"""How the numba backend's parallel loops share the cores with BLAS.

Compiled kernels run their loops on numba's OpenMP pool; matrix products run on OpenBLAS's own
pool. With OpenMP's default wait policy its workers spin for a while after every parallel
loop, and on a machine with as many threads as cores that spinning steals the cores BLAS's
threads need next: a 1x1 convolution (a BLAS product, then a compiled epilogue) took 8 ms
instead of 0.3 ms here. So the backend asks OpenMP for the passive policy — idle workers sleep,
nothing spins between loops or between runs — unless the user chose a policy already. It must
be set before the OpenMP runtime loads, which is the first parallel call, after this import.

    threads = thread_count(interpreter_num_threads)   # at prepare
    use_threads(threads); compiled_parallel_kernel(...)  # at run
"""

from __future__ import annotations

import os
import threading
from functools import cache

import numba

from edgerun.devices.host import physical_cores

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# Below this much work (multiply-adds or elements touched) a kernel runs on the calling thread
# alone: waking a sleeping worker costs more than it saves (on the 2-vCPU VMs we measure on, a
# whole MobileNetV2 ran slower on 2 threads than on 1 before this threshold).
PARALLEL_MIN_WORK = 1 << 19


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
    if getattr(_chosen, "count", None) != count:
        numba.set_num_threads(count)
        _chosen.count = count
