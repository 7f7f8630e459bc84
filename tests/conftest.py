"""Suite-wide settings.

Hypothesis runs derandomized here, so CI sees the same examples on every run and a failure
reproduces; set HYPOTHESIS_PROFILE=explore to draw fresh examples (what a fuzzing session
should do, and what found the bugs the fuzz tests now pin down).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
