"""Whole rounds in process: the unmasked sum equals the plain sum (mod 2^b) with dropouts at
every stage, and rounds with too few clients abort without a result."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.federated.secagg.errors import RoundAborted
from edgerun.federated.secagg.workflow import DROP_STAGES, run_round
from tests.federated.secagg.helpers import device_keys, params, plain_sum, ring_inputs


@pytest.mark.parametrize("n", [3, 4, 7, 12, 25, 50])
def test_sum_without_dropouts_is_exact(n):
    keys = device_keys(n)
    p = params(n)
    inputs = ring_inputs(keys, p, seed=n)
    outcome = run_round(p, inputs, keys)
    assert np.array_equal(outcome.total, plain_sum(inputs, keys, 32))


@pytest.mark.parametrize("stage", DROP_STAGES)
@pytest.mark.parametrize("n", [3, 10, 50])
def test_sum_with_dropouts_at_each_stage_is_the_sum_of_survivors(n, stage):
    keys = device_keys(n)
    p = params(n)
    inputs = ring_inputs(keys, p, seed=n)
    ids = sorted(keys)
    dropped = ids[1 : 1 + max(1, n // 5)]  # 20 %, at least one
    outcome = run_round(p, inputs, keys, {c: stage for c in dropped})
    # A client that dropped after sending its masked input (consistency, unmask) still counts.
    counted = ids if stage in ("consistency", "unmask") else [c for c in ids if c not in dropped]
    assert outcome.survivors == counted
    assert np.array_equal(outcome.total, plain_sum(inputs, counted, 32))


@pytest.mark.parametrize("bits", [12, 20, 32])
def test_sum_with_reduced_bits_and_mixed_dropouts(bits):
    keys = device_keys(20)
    p = params(20, length=500, bits=bits)
    inputs = ring_inputs(keys, p, seed=bits)
    ids = sorted(keys)
    drops = {ids[2]: "share", ids[5]: "masked", ids[9]: "masked", ids[11]: "unmask"}
    outcome = run_round(p, inputs, keys, drops)
    counted = [c for c in ids if drops.get(c) not in ("share", "masked")]
    assert np.array_equal(outcome.total, plain_sum(inputs, counted, bits))


def test_secagg_plus_neighbour_graph_with_dropouts():
    keys = device_keys(50)
    p = params(50, neighbours=10)
    inputs = ring_inputs(keys, p, seed=7)
    ids = sorted(keys)
    drops = {c: "masked" for c in ids[::10]}  # 5 of 50: every neighbourhood of 11 keeps >= 6 holders
    outcome = run_round(p, inputs, keys, drops)
    counted = [c for c in ids if c not in drops]
    assert np.array_equal(outcome.total, plain_sum(inputs, counted, 32))


def test_too_many_dropouts_abort_the_round():
    keys = device_keys(6)
    p = params(6)
    inputs = ring_inputs(keys, p)
    ids = sorted(keys)
    # 3 of 6 left, threshold 4 of 6: each survivor would refuse to unmask, so the server aborts
    # when the consistency stage closes instead of waiting for reveals that cannot come
    with pytest.raises(RoundAborted, match="3 survivors signed the list, clients need 4 signatures"):
        run_round(p, inputs, keys, {c: "masked" for c in ids[:3]})
    with pytest.raises(RoundAborted, match="need 2"):
        run_round(p, inputs, keys, {c: "advertise" for c in ids[:5]})


def test_dropped_neighbourhood_in_sparse_graph_aborts_cleanly():
    keys = device_keys(30)
    p = params(30, neighbours=4)  # shares held by 5 clients, 3 needed
    inputs = ring_inputs(keys, p)
    ids = sorted(keys)
    from edgerun.federated.secagg import graph

    g = graph.neighbours(ids, 4, p.graph_seed)
    victim = ids[0]
    drops = {victim: "masked", **{c: "unmask" for c in g[victim][:3]}}  # only 1 of its 4 neighbours reveals
    with pytest.raises(RoundAborted, match="shares of"):
        run_round(p, inputs, keys, drops)


def test_masked_vector_is_uniform_and_uncorrelated_with_its_input():
    from scipy import stats

    from edgerun.federated.secagg.quantize import quantize

    keys = device_keys(4)
    p = params(4, length=100_000)
    ids = sorted(keys)
    x = np.sin(np.linspace(0, 20, p.length))  # a structured delta
    inputs = {c: quantize(x, p.quantization) for c in ids}
    from edgerun.federated.secagg.client import SecAggClient
    from edgerun.federated.secagg.server import SecAggServer

    server = SecAggServer(p, ids, {c: keys[c].public_bytes for c in ids})
    clients = {c: SecAggClient(c, keys[c], p) for c in ids}
    for c in ids:
        server.receive_keys(c, clients[c].advertise())
    server.close()
    for c in ids:
        server.receive_shares(c, clients[c].share_keys(server.roster, {d: keys[d].public_bytes for d in ids}))
    server.close()
    y = clients[ids[0]].mask(server.inbox(ids[0]), inputs[ids[0]])
    counts = np.bincount((y >> 24).astype(np.int64), minlength=256)  # 256 equal bins of Z_2^32
    assert stats.chisquare(counts).pvalue > 1e-4
    plain_counts = np.bincount((inputs[ids[0]] >> 24).astype(np.int64), minlength=256)
    assert stats.chisquare(plain_counts).pvalue < 1e-10  # the same test does see the input's structure
    assert abs(np.corrcoef(y.astype(np.float64), x)[0, 1]) < 0.02
