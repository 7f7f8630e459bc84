"""Fixtures of the cuda tests (and the serving tests' real-server fixture they share)."""

import pytest

from tests.serving.conftest import start_server  # noqa: F401 - the real-server fixture


@pytest.fixture(autouse=True, scope="session")
def cuda_kernels_loaded():
    """Every kernel module registers its claims before any test replaces the claim table (a
    module first imported inside such a test would register into the replaced table only)."""
    import edgerun.devices.cuda

    edgerun.devices.cuda.load()
