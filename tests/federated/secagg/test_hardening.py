"""Regression tests of the secure-aggregation review: a coordinator cannot isolate a client
(empty inbox, tiny roster), a malformed key or share excludes only its sender, and one bad
revealed share does not abort a round that has spare shares."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgerun.federated.secagg.client import SecAggClient
from edgerun.federated.secagg.errors import RoundAborted
from edgerun.federated.secagg.server import SecAggServer
from tests.federated.secagg.helpers import device_keys, params, ring_inputs

N = 5


def _advertised(p):
    keys = device_keys(N)
    ids = sorted(keys)
    server = SecAggServer(p, ids, {c: keys[c].public_bytes for c in ids})
    clients = {c: SecAggClient(c, keys[c], p) for c in ids}
    for c in ids:
        server.receive_keys(c, clients[c].advertise())
    return server, clients, keys


def _shared(p):
    server, clients, keys = _advertised(p)
    server.close()
    device = {c: keys[c].public_bytes for c in clients}
    for c in sorted(clients):
        server.receive_shares(c, clients[c].share_keys(server.roster, device))
    server.close()
    return server, clients, keys


@pytest.mark.parametrize("kept", [0, 1])
def test_client_refuses_to_mask_with_too_small_an_inbox(kept):
    """A coordinator withholding shares (empty or nearly empty inbox) would leave the victim
    masked by its self mask alone; the client refuses to send anything."""
    p = params(N, length=16, cohort=N)
    server, clients, _ = _shared(p)
    victim = sorted(clients)[0]
    x = ring_inputs([victim], p)[victim]
    with pytest.raises(RoundAborted, match="refusing to send a masked input"):
        clients[victim].mask(server.inbox(victim)[:kept], x)
    assert clients[victim].stage == "aborted"


def test_client_masks_with_a_threshold_sized_inbox():
    p = params(N, length=16, cohort=N)  # complete graph of 5: t = 3 holders, itself + 2 peers
    server, clients, _ = _shared(p)
    victim = sorted(clients)[0]
    x = ring_inputs([victim], p)[victim]
    assert clients[victim].mask(server.inbox(victim)[:2], x).shape == (16,)


def test_client_refuses_a_roster_much_smaller_than_the_stated_cohort():
    p = params(N, length=16, cohort=N)
    server, clients, keys = _advertised(p)
    a, b = sorted(clients)[:2]
    tiny = {c: server.roster[c] for c in (a, b)}  # coordinator drops everyone else
    with pytest.raises(RoundAborted, match="cohort 5"):
        clients[a].share_keys(tiny, {c: keys[c].public_bytes for c in clients})
    assert clients[a].stage == "aborted"


def test_server_aborts_when_the_roster_is_below_the_cohort_threshold():
    p = params(N, length=16, cohort=N)
    keys = device_keys(N)
    ids = sorted(keys)
    server = SecAggServer(p, ids, {c: keys[c].public_bytes for c in ids})
    for c in ids[:2]:
        server.receive_keys(c, SecAggClient(c, keys[c], p).advertise())
    with pytest.raises(RoundAborted, match="cohort of 5"):
        server.close()


def test_cohort_travels_in_the_round_config():
    from edgerun.federated.secagg.messages import SecAggParams
    from edgerun.federated.secagg.options import SecAggOptions

    config = SecAggOptions().round_config(3, 7, [(2, 2)], 1.0)
    assert SecAggParams.from_config(config).cohort == 7
    assert dataclasses.replace(SecAggParams.from_config(config), cohort=0).cohort == 0
    assert np.isfinite(config["clip_range"])


LOW_ORDER = [bytes(32), (1).to_bytes(32, "little")]  # the zero point and the point of order 1


def _signed(keys, client, **changes):
    from edgerun.federated.secagg.client import keys_message

    forged = dataclasses.replace(client.advertise(), **changes)
    return dataclasses.replace(forged, signature=keys[client.id].sign(keys_message(client.params.round, forged)))


@pytest.mark.parametrize("field,value", [("mask_key", LOW_ORDER[0]), ("encryption_key", LOW_ORDER[1]),
                                         ("mask_key", bytes(31)), ("seed_commitment", b"x" * 33)])
def test_malformed_or_low_order_keys_exclude_only_that_client(field, value):
    from edgerun.federated.secagg.errors import MalformedMessage
    from tests.federated.secagg.helpers import plain_sum

    keys = device_keys(N)
    p = params(N, length=16)
    ids = sorted(keys)
    server = SecAggServer(p, ids, {c: keys[c].public_bytes for c in ids})
    clients = {c: SecAggClient(c, keys[c], p) for c in ids}
    bad = ids[0]
    with pytest.raises(MalformedMessage):
        server.receive_keys(bad, _signed(keys, clients[bad], **{field: value}))
    assert bad not in server.expected()  # excluded, the stage does not wait for it
    for c in ids[1:]:
        server.receive_keys(c, clients[c].advertise())
    server.close()
    assert sorted(server.roster) == ids[1:]
    device = {c: keys[c].public_bytes for c in ids}
    inputs = ring_inputs(ids, p)
    honest = ids[1:]
    for c in honest:
        server.receive_shares(c, clients[c].share_keys(server.roster, device))
    server.close()
    for c in honest:
        server.receive_masked(c, clients[c].mask(server.inbox(c), inputs[c]))
    server.close()
    survivors = server.survivor_list()
    for c in survivors:
        server.receive_consistency(c, clients[c].consistency(survivors))
    server.close()
    for c in survivors:
        server.receive_unmask(c, clients[c].unmask(survivors, server.proof_list()))
    assert np.array_equal(server.finish(), plain_sum(inputs, honest, 32))


@pytest.mark.parametrize("change", [{"nonce": b"\0" * 8}, {"ciphertext": b"\0" * 10}, {"nonce": b"\0" * 16}])
def test_shares_with_a_wrong_nonce_or_ciphertext_length_exclude_the_sender(change):
    from edgerun.federated.secagg.errors import MalformedMessage

    p = params(N, length=16)
    server, clients, keys = _advertised(p)
    server.close()
    device = {c: keys[c].public_bytes for c in clients}
    bad = sorted(clients)[0]
    shares = clients[bad].share_keys(server.roster, device)
    with pytest.raises(MalformedMessage, match="nonce"):
        server.receive_shares(bad, [dataclasses.replace(shares[0], **change), *shares[1:]])
    assert bad not in server.expected() and bad not in server.shares


def _to_unmask(p, drop=()):
    server, clients, keys = _shared(p)
    ids = sorted(clients)
    inputs = ring_inputs(ids, p)
    for c in ids:
        if c not in drop:
            server.receive_masked(c, clients[c].mask(server.inbox(c), inputs[c]))
    server.close()
    survivors = server.survivor_list()
    for c in survivors:
        server.receive_consistency(c, clients[c].consistency(survivors))
    server.close()
    return server, clients, inputs, survivors


def _corrupt(revealed, owner):
    from edgerun.federated.secagg import shamir

    return [dataclasses.replace(s, y=shamir.encode_y((shamir.decode_y(s.y) + 1) % shamir.PRIME))
            if s.owner == owner else s for s in revealed]


@pytest.mark.parametrize("drop", [(), ("c002",)])
def test_one_wrong_revealed_share_does_not_abort_when_spare_shares_exist(drop):
    from tests.federated.secagg.helpers import plain_sum

    p = params(N, length=16)  # complete graph of 5: t = 3 of 5 holders
    server, clients, inputs, survivors = _to_unmask(p, drop)
    victim = drop[0] if drop else survivors[1]  # a dropped client's mask key, or a survivor's seed
    for c in survivors:
        revealed = clients[c].unmask(survivors, server.proof_list())
        server.receive_unmask(c, _corrupt(revealed, victim) if c == survivors[0] else revealed)  # lowest x lies
    assert np.array_equal(server.finish(), plain_sum(inputs, survivors, 32))


def test_a_wrong_share_among_exactly_t_aborts():
    p = params(N, length=16)
    server, clients, inputs, survivors = _to_unmask(p)
    for c in survivors[:3]:  # only t = 3 reveal
        revealed = clients[c].unmask(survivors, server.proof_list())
        server.receive_unmask(c, _corrupt(revealed, survivors[4]) if c == survivors[0] else revealed)
    with pytest.raises(RoundAborted, match="does not match its commitment"):
        server.finish()
