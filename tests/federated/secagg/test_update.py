"""Weighted deltas through the ring: the dequantized average equals plaintext FedAvg within
the quantization error."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.federated.secagg.options import SecAggOptions, client_weight
from edgerun.federated.secagg.update import decode_sum, encode_update, vector_length
from edgerun.federated.secagg.workflow import run_round
from tests.federated.secagg.helpers import device_keys

SHAPES = [(8, 5), (5,)]


@pytest.mark.parametrize("n", [3, 17])
def test_weighted_average_through_secure_aggregation_equals_fedavg(n):
    rng = np.random.default_rng(n)
    deltas = [[rng.normal(0, 0.05, s) for s in SHAPES] for _ in range(n)]
    examples = rng.integers(5, 60, n)
    options = SecAggOptions(max_weight=100)
    from edgerun.federated.secagg.messages import SecAggParams

    params = SecAggParams.from_config(options.round_config(1, n, SHAPES, 0.0))
    keys = device_keys(n)
    ids = sorted(keys)
    inputs = {c: encode_update(d, client_weight(int(e), 100), params.quantization)
              for c, d, e in zip(ids, deltas, examples, strict=True)}
    outcome = run_round(params, inputs, keys, {ids[0]: "masked"})  # one dropout
    sums, weight = decode_sum(outcome.total, params.quantization, len(outcome.survivors), SHAPES)
    kept = range(1, n)
    want = [sum(examples[i] * deltas[i][j] for i in kept) / sum(examples[i] for i in kept) for j in range(2)]
    step = params.quantization.step
    bound = (n * step / 2) / (weight - n * step / 2)  # rounding of each w_i * delta_i and of each w_i
    for got_sum, expected in zip(sums, want, strict=True):
        assert np.abs(got_sum / weight - expected).max() <= bound * (1 + np.abs(expected).max()) + 1e-12
    assert abs(weight - sum(examples[i] for i in kept) / 100) <= n * step / 2


def test_decode_refuses_a_sum_of_the_wrong_length():
    q = SecAggOptions().round_config(1, 3, SHAPES, 0.0)
    from edgerun.federated.secagg.messages import SecAggParams

    params = SecAggParams.from_config(q)
    ring = encode_update([np.zeros(s) for s in SHAPES], 1.0, params.quantization)
    assert len(ring) == vector_length(SHAPES) == 46
    with pytest.raises(ValueError, match="46"):
        decode_sum(ring[:-1], params.quantization, 3, SHAPES)
