"""Secure-aggregation messages <-> protobuf (federated/protos/federated.proto)."""

from __future__ import annotations

import json
from typing import Any

from edgerun.federated.protos import federated_pb2 as pb
from edgerun.federated.secagg.errors import SecAggError
from edgerun.federated.secagg.messages import (
    AdvertiseKeys,
    ConsistencyProof,
    EncryptedShare,
    RevealedShare,
    StageReply,
)
from edgerun.federated.stages import Stage


def request_body(request: pb.SecAggRequest) -> bytes:
    """The bytes a SecAggRequest's auth signature covers: the request without its auth block."""
    copy = pb.SecAggRequest()
    copy.CopyFrom(request)
    copy.ClearField("auth")
    return copy.SerializeToString(deterministic=True)


def masked_body(round_number: int, bits: int, length: int, digest: bytes) -> bytes:
    """The bytes a MaskedHeader's auth signature covers."""
    return json.dumps({"round": round_number, "bits": bits, "length": length}, sort_keys=True).encode() + digest


def keys_to_pb(keys: AdvertiseKeys, device_key: bytes = b"") -> pb.SecAggKeys:
    return pb.SecAggKeys(client_id=keys.client_id, encryption_key=keys.encryption_key, mask_key=keys.mask_key,
                         seed_commitment=keys.seed_commitment, signature=keys.signature, device_key=device_key)


def keys_from_pb(m: pb.SecAggKeys) -> AdvertiseKeys:
    return AdvertiseKeys(m.client_id, m.encryption_key, m.mask_key, m.seed_commitment, m.signature)


def share_to_pb(s: EncryptedShare) -> pb.SecAggShare:
    return pb.SecAggShare(sender=s.sender, recipient=s.recipient, nonce=s.nonce, ciphertext=s.ciphertext)


def share_from_pb(m: pb.SecAggShare) -> EncryptedShare:
    return EncryptedShare(m.sender, m.recipient, m.nonce, m.ciphertext)


def fill_request(request: pb.SecAggRequest, stage: Stage, payload: Any) -> None:
    """Put a stage's payload (from SecAggClient) into `request`."""
    request.stage = str(stage)
    if stage == Stage.ADVERTISE:
        request.keys.CopyFrom(keys_to_pb(payload))
    elif stage == Stage.SHARE:
        request.shares.extend(share_to_pb(s) for s in payload)
    elif stage == Stage.CONSISTENCY:
        request.proof.CopyFrom(pb.SecAggProof(client_id=payload.client_id, signature=payload.signature))
    elif stage == Stage.UNMASK:
        request.revealed.extend(pb.SecAggReveal(owner=r.owner, kind=r.kind, x=r.x, y=r.y) for r in payload)
    elif stage != Stage.POLL:
        raise SecAggError(f"unknown stage {stage!r}")


def payload_of(request: pb.SecAggRequest) -> Any:
    """The dataclass payload of a request (None for a poll)."""
    if request.stage == Stage.ADVERTISE:
        return keys_from_pb(request.keys)
    if request.stage == Stage.SHARE:
        return [share_from_pb(s) for s in request.shares]
    if request.stage == Stage.CONSISTENCY:
        return ConsistencyProof(request.proof.client_id, request.proof.signature)
    if request.stage == Stage.UNMASK:
        return [RevealedShare(r.owner, r.kind, r.x, r.y) for r in request.revealed]
    return None


def reply_to_pb(r: StageReply) -> pb.SecAggReply:
    return pb.SecAggReply(
        stage=str(r.stage), expects_you=r.expects_you, roster=[keys_to_pb(k, d) for k, d in r.roster],
        inbox=[share_to_pb(s) for s in r.inbox], survivors=r.survivors,
        proofs=[pb.SecAggProof(client_id=p.client_id, signature=p.signature) for p in r.proofs],
        message=r.message, retry_after=r.retry_after)


def reply_from_pb(m: pb.SecAggReply) -> StageReply:
    """SecAggError for a stage this client does not know."""
    try:
        stage = Stage(m.stage)
    except ValueError:
        raise SecAggError(f"unexpected stage {m.stage!r} from the coordinator") from None
    return StageReply(stage, m.expects_you, [(keys_from_pb(k), k.device_key) for k in m.roster],
                      [share_from_pb(s) for s in m.inbox], list(m.survivors),
                      [ConsistencyProof(p.client_id, p.signature) for p in m.proofs], m.message, m.retry_after)
