"""Acceptance of secure aggregation: the digits setup (50 clients, 2 label shards each, half
selected per round, 20 % of those dropping at a random point of the protocol, E = 5, B = 10,
lr 0.1, MLP 64-64-10) reaches >= 95 % within 100 rounds with secure aggregation on, and
every round's accuracy is within 1 % of the same seeded run without it. The runs are in
process (federated.secagg.simulate) so both see the same selections and dropouts;
tests/federated/secagg/test_grpc.py runs the same protocol over gRPC."""

from __future__ import annotations

import numpy as np

from edgerun.federated.demo import digits_setup
from edgerun.federated.secagg.options import SecAggOptions
from edgerun.federated.secagg.simulate import InProcessConfig, run


def test_secure_digits_reaches_95_percent_and_tracks_the_plain_run(tmp_path):
    model, x, y, x_test, y_test = digits_setup(tmp_path)
    config = InProcessConfig(num_clients=50, shards_per_client=2, fraction_fit=0.5, drop_probability=0.2,
                             rounds=100, epochs=5, batch_size=10, lr=0.1, seed=0)
    plain = run(model, x, y, x_test, y_test, config, secagg=None)
    secure = run(model, x, y, x_test, y_test, config, secagg=SecAggOptions())
    dropped = [r["selected"] - r["counted"] for r in secure]
    assert sum(dropped) > 0.1 * sum(r["selected"] for r in secure)  # dropouts did happen
    assert all(r["status"] == "aggregated" for r in secure)
    accuracy = np.array([r["test_accuracy"] for r in secure])
    assert accuracy.max() >= 0.95, accuracy
    gap = np.abs(accuracy - np.array([r["test_accuracy"] for r in plain]))
    assert gap.max() <= 0.01, gap
