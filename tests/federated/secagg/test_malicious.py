"""Malicious or broken messages are refused with a specific error; the round then either
completes with the right sum or aborts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgerun.federated.auth import KeyPair
from edgerun.federated.secagg.client import SecAggClient
from edgerun.federated.secagg.errors import (
    BothSharesRevealed,
    ForgedMessage,
    InconsistentView,
    MalformedVector,
    StageError,
    SurvivorClaimedDropped,
    WrongRecipient,
)
from edgerun.federated.secagg.messages import MASK_KEY, SEED
from edgerun.federated.secagg.server import SecAggServer
from tests.federated.secagg.helpers import device_keys, params, plain_sum, ring_inputs

N = 5


def started(stop_after: str = "masked", bits: int = 32):
    """Server and clients of a 5-client round, run up to and including `stop_after`."""
    keys = device_keys(N)
    p = params(N, length=32, bits=bits)
    ids = sorted(keys)
    server = SecAggServer(p, ids, {c: keys[c].public_bytes for c in ids})
    clients = {c: SecAggClient(c, keys[c], p) for c in ids}
    inputs = ring_inputs(ids, p)
    for c in ids:
        server.receive_keys(c, clients[c].advertise())
    server.close()
    device = {c: keys[c].public_bytes for c in ids}
    if stop_after == "advertise":
        return server, clients, inputs, keys
    for c in ids:
        server.receive_shares(c, clients[c].share_keys(server.roster, device))
    server.close()
    if stop_after == "share":
        return server, clients, inputs, keys
    for c in ids:
        server.receive_masked(c, clients[c].mask(server.inbox(c), inputs[c]))
    server.close()
    return server, clients, inputs, keys


def finish(server, clients):
    survivors = server.survivor_list()
    for c in survivors:
        server.receive_consistency(c, clients[c].consistency(survivors))
    server.close()
    for c in sorted(server.proofs):
        server.receive_unmask(c, clients[c].unmask(survivors, server.proof_list()))
    return server.finish()


def test_wrong_length_masked_vector_is_refused_and_round_still_completes():
    server, clients, inputs, _ = started("share")
    ids = sorted(clients)
    y = clients[ids[0]].mask(server.inbox(ids[0]), inputs[ids[0]])
    with pytest.raises(MalformedVector, match="32 uint32"):
        server.receive_masked(ids[0], y[:-1])
    with pytest.raises(MalformedVector, match="uint32"):
        server.receive_masked(ids[0], y.astype(np.uint64))
    server.receive_masked(ids[0], y)
    for c in ids[1:]:
        server.receive_masked(c, clients[c].mask(server.inbox(c), inputs[c]))
    server.close()
    assert np.array_equal(finish(server, clients), plain_sum(inputs, ids, 32))


def test_out_of_range_masked_vector_is_refused():
    server, clients, inputs, _ = started("share", bits=16)
    c = sorted(clients)[0]
    y = clients[c].mask(server.inbox(c), inputs[c])
    y[3] = 1 << 16
    with pytest.raises(MalformedVector, match="outside"):
        server.receive_masked(c, y)


def test_share_for_the_wrong_recipient_is_refused():
    server, clients, _, _ = started("share")
    a, b, c = sorted(clients)[:3]
    inbox_b = server.inbox(b)
    with pytest.raises(WrongRecipient, match="addressed to"):
        clients[a].mask(inbox_b, np.zeros(32, np.uint32))
    redirected = [dataclasses.replace(s, recipient=c) for s in server.inbox(b)]  # re-labelled: AEAD fails
    with pytest.raises(ForgedMessage, match="AES-GCM"):
        clients[c].mask([s for s in redirected if s.sender != c][:1], np.zeros(32, np.uint32))


def test_shares_not_matching_the_graph_are_refused():
    server, clients, _, keys = started("advertise")
    a = sorted(clients)[0]
    device = {c: keys[c].public_bytes for c in clients}
    shares = clients[a].share_keys(server.roster, device)
    with pytest.raises(WrongRecipient, match="neighbours"):
        server.receive_shares(a, shares[1:])
    with pytest.raises(ForgedMessage, match="another client's name"):
        server.receive_shares(a, [dataclasses.replace(s, sender="c001") for s in shares])


def test_forged_keys_and_replayed_share_are_refused():
    keys = device_keys(N)
    p = params(N)
    ids = sorted(keys)
    server = SecAggServer(p, ids, {c: keys[c].public_bytes for c in ids})
    honest = SecAggClient(ids[0], keys[ids[0]], p).advertise()
    impostor = SecAggClient(ids[0], KeyPair.generate(), p).advertise()  # not the enrolled key
    with pytest.raises(ForgedMessage, match="signature"):
        server.receive_keys(ids[0], impostor)
    server.receive_keys(ids[0], honest)
    with pytest.raises(StageError, match="not part of stage"):
        server.receive_keys(ids[0], honest)  # replayed
    server2, clients, _, _ = started("share")
    b = sorted(clients)[1]
    inbox = server2.inbox(b)
    with pytest.raises(ForgedMessage, match="replay"):
        clients[b].mask(inbox + inbox[:1], np.zeros(32, np.uint32))


def test_roster_with_swapped_keys_is_refused_by_clients():
    server, clients, _, keys = started("advertise")
    a, b = sorted(clients)[:2]
    roster = dict(server.roster)
    roster[b] = dataclasses.replace(roster[b], encryption_key=roster[a].encryption_key)  # coordinator MITM
    with pytest.raises(ForgedMessage, match="signature"):
        clients[a].share_keys(roster, {c: keys[c].public_bytes for c in clients})


def test_client_revealing_both_shares_for_one_peer_is_refused():
    server, clients, inputs, _ = started("masked")
    survivors = server.survivor_list()
    for c in survivors:
        server.receive_consistency(c, clients[c].consistency(survivors))
    server.close()
    c = survivors[0]
    revealed = clients[c].unmask(survivors, server.proof_list())
    other = revealed[1]
    both = [*revealed, dataclasses.replace(other, kind=MASK_KEY)]
    with pytest.raises(BothSharesRevealed, match="both shares"):
        server.receive_unmask(c, both)
    with pytest.raises(InconsistentView, match="mask_key share"):
        server.receive_unmask(c, [dataclasses.replace(other, kind=MASK_KEY)])
    server.receive_unmask(c, revealed)
    for d in survivors[1:]:
        server.receive_unmask(d, clients[d].unmask(survivors, server.proof_list()))
    assert np.array_equal(server.finish(), plain_sum(inputs, survivors, 32))
    assert {s.kind for s in revealed} == {SEED}


def test_coordinator_claiming_a_survivor_dropped_is_refused():
    server, clients, _, _ = started("masked")
    survivors = server.survivor_list()
    victim = survivors[0]
    claimed = survivors[1:]
    with pytest.raises(SurvivorClaimedDropped, match=victim):
        clients[victim].consistency(claimed)
    # The others sign the list the coordinator shows them; if it then swaps lists, they refuse.
    proofs = [clients[c].consistency(claimed) for c in claimed]
    with pytest.raises(InconsistentView, match="changed"):
        clients[claimed[0]].unmask(survivors, proofs)


def test_unmask_needs_enough_valid_survivor_signatures():
    server, clients, _, _ = started("masked")
    survivors = server.survivor_list()
    proofs = [clients[c].consistency(survivors) for c in survivors]
    forged = [dataclasses.replace(proofs[0], signature=proofs[1].signature), *proofs[1:]]
    with pytest.raises(ForgedMessage, match="signature"):
        clients[survivors[2]].unmask(survivors, forged)
    with pytest.raises(InconsistentView, match="need"):
        clients[survivors[3]].unmask(survivors, proofs[:1])


def test_messages_out_of_stage_are_refused():
    server, clients, inputs, _ = started("share")
    c = sorted(clients)[0]
    with pytest.raises(StageError, match="'advertise' message"):
        server.receive_keys(c, server.roster[c])
    with pytest.raises(StageError, match="cannot run"):
        clients[c].advertise()
