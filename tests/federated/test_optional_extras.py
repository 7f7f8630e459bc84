"""Optional packages are imported where they are used, and a missing one is one line naming its extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgerun.federated import privacy
from edgerun.federated.privacy import DpOptions, PrivacyAccountant, PrivacyUnavailable


def test_the_coordinator_and_client_do_not_import_dp_accounting():
    code = ("import sys; import edgerun.federated.coordinator, edgerun.federated.client, edgerun.federated.cli; "
            "print('dp_accounting' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_differential_privacy_without_dp_accounting_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dp_accounting", None)  # as if not installed: import raises ImportError
    with pytest.raises(PrivacyUnavailable, match=r"^differential privacy needs dp-accounting: "
                                                 r"pip install 'edgerun\[privacy\]'$"):
        PrivacyAccountant(DpOptions(noise_multiplier=1.0, clip_norm=1.0))
    monkeypatch.undo()
    assert PrivacyAccountant(DpOptions(noise_multiplier=1.0, clip_norm=1.0)).epsilon == 0.0
    assert privacy._accounting() is sys.modules["dp_accounting"]
