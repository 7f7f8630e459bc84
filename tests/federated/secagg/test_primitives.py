"""Shamir, key agreement / share encryption, the mask PRG, quantization and the neighbour graph."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from edgerun.federated.secagg import crypto, graph, prg, shamir
from edgerun.federated.secagg.errors import ConfigurationError, ForgedMessage, MalformedVector, SecAggError
from edgerun.federated.secagg.quantize import Quantization, dequantize_sum, pack, plan, quantize, unpack


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=64).filter(lambda b: b[0] != 0), st.integers(2, 12), st.data())
def test_shamir_any_t_shares_rebuild_the_secret(secret, n, data):
    t = data.draw(st.integers(1, n))
    shares = shamir.split(secret, t, list(range(1, n + 1)))
    subset = data.draw(st.permutations(shares))[:t]
    assert shamir.combine(subset, len(secret)) == secret


def test_shamir_fewer_than_t_shares_give_a_different_value():
    secret = os.urandom(32)
    shares = shamir.split(secret, 5, [1, 2, 3, 4, 5, 6])
    with pytest.raises(SecAggError):  # t-1 shares: a random field element, almost never < 2^256
        shamir.combine(shares[:4], 32)


def test_shamir_refuses_bad_arguments():
    with pytest.raises(ValueError, match="threshold"):
        shamir.split(b"x", 4, [1, 2, 3])
    with pytest.raises(ValueError, match="distinct"):
        shamir.split(b"x", 2, [1, 1, 2])
    with pytest.raises(SecAggError, match="distinct"):
        shamir.combine([(1, 5), (1, 6)], 1)


def test_agreement_is_symmetric_and_bound_to_purpose_round_and_pair():
    a, _ = crypto.new_private_key()
    b, _ = crypto.new_private_key()
    ab = crypto.agree(a, crypto.public_bytes(b), "share", 3, "u", "v")
    assert ab == crypto.agree(b, crypto.public_bytes(a), "share", 3, "v", "u")
    assert ab != crypto.agree(a, crypto.public_bytes(b), "mask", 3, "u", "v")
    assert ab != crypto.agree(a, crypto.public_bytes(b), "share", 4, "u", "v")
    assert ab != crypto.agree(a, crypto.public_bytes(b), "share", 3, "u", "w")


def test_low_order_public_key_is_refused():
    a, _ = crypto.new_private_key()
    with pytest.raises(ForgedMessage, match="peer public key"):
        crypto.agree(a, bytes(32), "share", 1, "u", "v")


def test_aead_rejects_other_recipient_and_altered_ciphertext():
    key = os.urandom(32)
    nonce, ct = crypto.seal(key, b"share", b"ad-u-v")
    assert crypto.open_sealed(key, nonce, ct, b"ad-u-v", "x") == b"share"
    with pytest.raises(ForgedMessage, match="AES-GCM"):
        crypto.open_sealed(key, nonce, ct, b"ad-u-w", "x")
    with pytest.raises(ForgedMessage, match="AES-GCM"):
        crypto.open_sealed(key, nonce, bytes([ct[0] ^ 1]) + ct[1:], b"ad-u-v", "x")


def test_prg_is_deterministic_per_seed_and_uniform():
    seed = os.urandom(32)
    a, b = prg.expand(seed, 200_000, 32), prg.expand(seed, 200_000, 32)
    assert np.array_equal(a, b) and not np.array_equal(a, prg.expand(os.urandom(32), 200_000, 32))
    counts = np.bincount((a >> 28).astype(np.int64), minlength=16)
    assert stats.chisquare(counts).pvalue > 1e-4
    small = prg.expand(seed, 10_000, 12)
    assert small.max() < 4096 and small.dtype == np.uint32


def test_prg_refuses_a_short_seed():
    with pytest.raises(ValueError, match="32 bytes"):
        prg.expand(b"short", 10, 32)


@pytest.mark.parametrize("bits", [8, 12, 16, 24, 32])
def test_quantized_sum_is_exact_and_within_quantization_error(bits):
    q = plan(bits, 1.0, 5)
    rng = np.random.default_rng(bits)
    xs = [rng.uniform(-1.2, 1.2, 1000) for _ in range(5)]  # some values beyond R get clipped
    ring = np.zeros(1000, dtype=np.uint32)
    for x in xs:
        ring = (ring + quantize(x, q)) & np.uint32((1 << bits) - 1) if bits < 32 else ring + quantize(x, q)
    ints = sum(np.rint(np.clip(x, -1, 1) * q.levels).astype(np.int64) for x in xs)
    got = dequantize_sum(ring, q, 5)
    assert np.array_equal(np.rint(got / q.step).astype(np.int64), ints)  # exact in the integers
    assert np.abs(got - sum(np.clip(x, -1, 1) for x in xs)).max() <= 5 * q.step / 2 + 1e-12


def test_no_wrap_check_refuses_too_many_clients():
    q = plan(16, 1.0, 10)
    q.check_no_wrap(10)
    with pytest.raises(ConfigurationError, match="could wrap"):
        q.check_no_wrap(11)
    with pytest.raises(ConfigurationError, match="levels"):
        plan(8, 1.0, 100)
    with pytest.raises(ConfigurationError, match="wrap"):
        Quantization(8, 1.0, 64).check_no_wrap(2)  # 2 * 64 = 2^7: the sum could wrap


@pytest.mark.parametrize("bits", [8, 13, 16, 24, 32])
def test_pack_roundtrip_size_and_range_check(bits):
    ring = prg.expand(os.urandom(32), 1001, bits)
    blob = pack(ring, bits)
    assert len(blob) == 1001 * ((bits + 7) // 8)
    assert np.array_equal(unpack(blob, bits, 1001), ring)
    with pytest.raises(MalformedVector, match="expected 1000"):
        unpack(blob, bits, 1000)
    if bits % 8:
        bad = bytearray(blob)
        bad[-1] = 0xFF
        with pytest.raises(MalformedVector, match="outside"):
            unpack(bytes(bad), bits, 1001)


@pytest.mark.parametrize("n,k", [(10, 4), (50, 6), (101, 20), (500, 20)])
def test_neighbour_graph_is_regular_symmetric_and_seed_dependent(n, k):
    ids = [f"c{i:03d}" for i in range(n)]
    g = graph.neighbours(ids, k, b"s" * 32)
    assert all(len(v) == k and c not in v for c, v in g.items())
    assert all(c in g[d] for c, v in g.items() for d in v)
    assert g != graph.neighbours(ids, k, b"t" * 32)


def test_small_cohorts_use_the_complete_graph():
    ids = [f"c{i}" for i in range(8)]
    assert all(len(v) == 7 for v in graph.neighbours(ids, 4, b"s" * 32, complete_below=10).values())
    assert all(len(v) == 7 for v in graph.neighbours(ids, 7, b"s" * 32).values())
    assert graph.threshold(2) == 2 and graph.threshold(20) == 11
