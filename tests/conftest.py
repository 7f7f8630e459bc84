"""Suite-wide settings.

Hypothesis runs derandomized here, so CI sees the same examples on every run and a failure
reproduces; set HYPOTHESIS_PROFILE=explore to draw fresh examples (what a fuzzing session
should do, and what found the bugs the fuzz tests now pin down).
"""

from __future__ import annotations

import os

# The cuda backend's kernels run under numba's CUDA simulator unless a real GPU is asked for
# (scripts/gpu_check.sh sets EDGERUN_GPU=1); numba reads this when it is first imported.
if os.environ.get("EDGERUN_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
