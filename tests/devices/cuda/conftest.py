"""Fixtures the cuda tests share with the serving tests."""

from tests.serving.conftest import start_server  # noqa: F401 - the real-server fixture
