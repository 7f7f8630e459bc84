"""One client's half of a secure-aggregation round, as a state machine.

advertise -> share_keys(roster) -> mask(inbox, input) -> consistency(survivors)
-> unmask(survivors, proofs). Each step checks what it receives and raises a specific
SecAggError instead of answering; the secrets never leave except as encrypted shares,
and for each peer at most one kind of share is ever revealed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence

import numpy as np

from edgerun.federated.auth import AuthError, KeyPair, verify
from edgerun.federated.secagg import crypto, graph, prg, shamir
from edgerun.federated.secagg.errors import (
    ForgedMessage,
    InconsistentView,
    MalformedVector,
    RoundAborted,
    StageError,
    SurvivorClaimedDropped,
    WrongRecipient,
)
from edgerun.federated.secagg.messages import (
    MASK_KEY,
    SEED,
    AdvertiseKeys,
    ConsistencyProof,
    EncryptedShare,
    RevealedShare,
    SecAggParams,
)
from edgerun.federated.secagg.quantize import add, subtract
from edgerun.federated.stages import Stage, following

Roster = Mapping[str, AdvertiseKeys]


def keys_message(round_number: int, keys: AdvertiseKeys) -> bytes:
    return crypto.frame("keys", round_number, keys.client_id, keys.encryption_key, keys.mask_key,
                        keys.seed_commitment)


def survivors_message(round_number: int, survivors: Sequence[str]) -> bytes:
    return crypto.frame("survivors", round_number, *sorted(survivors))


def share_associated(round_number: int, sender: str, recipient: str) -> bytes:
    return crypto.frame("share", round_number, sender, recipient)


def seed_commitment(round_number: int, client_id: str, seed: bytes) -> bytes:
    return hashlib.sha256(crypto.frame("seed", round_number, client_id, seed)).digest()


def verify_roster(params: SecAggParams, roster: Roster, device_keys: Mapping[str, bytes]) -> None:
    """ForgedMessage unless every advertised key set is signed by its client's device key."""
    for cid, keys in roster.items():
        if keys.client_id != cid or cid not in device_keys:
            raise ForgedMessage(f"round {params.round}: roster entry {cid!r} has no enrolled device key")
        try:
            verify(device_keys[cid], keys.signature, keys_message(params.round, keys), f"keys of {cid!r}")
        except AuthError as exc:
            raise ForgedMessage(f"round {params.round}: {exc}") from None


class SecAggClient:
    """Client `client_id` in one round; `device_key` is its enrolled Ed25519 key."""

    def __init__(self, client_id: str, device_key: KeyPair, params: SecAggParams) -> None:
        self.id, self.device_key, self.params = client_id, device_key, params
        self.stage = Stage.ADVERTISE
        self._c_sk, self._c_raw = crypto.new_private_key()
        self._s_sk, self._s_raw = crypto.new_private_key()
        self._seed = os.urandom(32)
        self.roster: dict[str, AdvertiseKeys] = {}
        self.device_keys: dict[str, bytes] = {}
        self.neighbours: list[str] = []
        self.index: dict[str, int] = {}
        self._held: dict[str, tuple[int, int]] = {}  # owner -> (seed share y, mask-key share y) held by me
        self.survivors: list[str] | None = None

    def _advance(self, expected: Stage) -> None:
        if self.stage != expected:
            raise StageError(f"client {self.id!r}: cannot run {expected!r} in stage {self.stage!r}")
        self.stage = following(expected)

    def advertise(self) -> AdvertiseKeys:
        """Stage 0: this client's signed public keys and seed commitment."""
        self._advance(Stage.ADVERTISE)
        keys = AdvertiseKeys(self.id, crypto.public_bytes(self._c_sk), crypto.public_bytes(self._s_sk),
                             seed_commitment(self.params.round, self.id, self._seed), b"")
        signature = self.device_key.sign(keys_message(self.params.round, keys))
        return AdvertiseKeys(keys.client_id, keys.encryption_key, keys.mask_key, keys.seed_commitment, signature)

    def share_keys(self, roster: Roster, device_keys: Mapping[str, bytes]) -> list[EncryptedShare]:
        """Stage 1: Shamir shares of the seed and mask key for each neighbour, encrypted for it.
        ForgedMessage for an unsigned or altered roster (including this client's own entry);
        RoundAborted when the roster is smaller than min_clients or than more than
        `threshold_fraction` of the cohort stated in the round parameters."""
        self._advance(Stage.SHARE)
        p = self.params
        verify_roster(p, roster, device_keys)
        mine = roster.get(self.id)
        if mine is None or (mine.encryption_key, mine.mask_key) != (crypto.public_bytes(self._c_sk),
                                                                     crypto.public_bytes(self._s_sk)):
            raise ForgedMessage(f"client {self.id!r}: the roster does not carry this client's own keys")
        need = max(p.min_clients, graph.threshold(p.cohort - 1, p.threshold_fraction) if p.cohort else 0)
        if len(roster) < need:
            self.stage = Stage.ABORTED
            raise RoundAborted(f"round {p.round}: {len(roster)} clients advertised keys, need {need} "
                               f"(cohort {p.cohort})")
        self.roster, self.device_keys = dict(roster), dict(device_keys)
        ids = sorted(roster)
        self.index = {cid: i + 1 for i, cid in enumerate(ids)}
        self.neighbours = graph.neighbours(ids, p.neighbours, p.graph_seed, p.complete_below)[self.id]
        holders = [self.id, *self.neighbours]
        t = graph.threshold(len(self.neighbours), p.threshold_fraction)
        xs = [self.index[h] for h in holders]
        seed_shares = shamir.split(self._seed, t, xs)
        key_shares = shamir.split(self._s_raw, t, xs)
        self._held[self.id] = (seed_shares[0][1], key_shares[0][1])
        out = []
        for holder, (_, ys), (_, yk) in zip(holders[1:], seed_shares[1:], key_shares[1:], strict=True):
            key = crypto.agree(self._c_sk, roster[holder].encryption_key, "share", p.round, self.id, holder)
            nonce, ct = crypto.seal(key, shamir.encode_y(ys) + shamir.encode_y(yk),
                                    share_associated(p.round, self.id, holder))
            out.append(EncryptedShare(self.id, holder, nonce, ct))
        return out

    def mask(self, inbox: Sequence[EncryptedShare], ring_input: np.ndarray) -> np.ndarray:
        """Stage 2: input + self mask + signed pairwise masks with every neighbour whose shares
        arrived, mod 2^b. WrongRecipient / ForgedMessage for a share not meant for this client
        or altered; MalformedVector for an input of the wrong length or range; RoundAborted
        (nothing is sent) when fewer than this client's threshold t of holders (itself and the
        neighbours whose shares arrived) remain: masking with fewer peers would let the
        coordinator unmask the input with its self-mask seed alone (Bonawitz et al.: |U2| >= t)."""
        self._advance(Stage.MASKED)
        p, bits = self.params, self.params.quantization.bits
        x = np.asarray(ring_input)
        if x.dtype != np.uint32 or x.shape != (p.length,) or (bits < 32 and x.size and int(x.max()) >> bits):
            raise MalformedVector(f"client {self.id!r}: input must be {p.length} uint32 values < 2^{bits}")
        for share in inbox:
            self._receive(share)
        t = graph.threshold(len(self.neighbours), p.threshold_fraction)
        if len(self._held) < max(t, p.min_clients):
            self.stage = Stage.ABORTED
            raise RoundAborted(f"client {self.id!r}: shares of {len(self._held) - 1} neighbours arrived, "
                               f"need {max(t, p.min_clients) - 1}: refusing to send a masked input")
        masked = add(x, prg.expand(self._seed, p.length, bits), bits)
        for v in sorted(self._held):
            if v == self.id:
                continue
            seed = crypto.agree(self._s_sk, self.roster[v].mask_key, "mask", p.round, self.id, v)
            pairwise = prg.expand(seed, p.length, bits)
            masked = add(masked, pairwise, bits) if self.id < v else subtract(masked, pairwise, bits)
        return masked

    def _receive(self, share: EncryptedShare) -> None:
        p = self.params
        if share.recipient != self.id:
            raise WrongRecipient(f"client {self.id!r}: share from {share.sender!r} is addressed to {share.recipient!r}")
        if share.sender not in self.neighbours:
            raise WrongRecipient(f"client {self.id!r}: share from {share.sender!r}, which is not a neighbour")
        if share.sender in self._held:
            raise ForgedMessage(f"client {self.id!r}: a second share from {share.sender!r} (replay)")
        key = crypto.agree(self._c_sk, self.roster[share.sender].encryption_key, "share", p.round, self.id,
                           share.sender)
        plain = crypto.open_sealed(key, share.nonce, share.ciphertext,
                                   share_associated(p.round, share.sender, self.id),
                                   f"share from {share.sender!r} to {self.id!r}")
        if len(plain) != 2 * shamir.SHARE_BYTES:
            raise ForgedMessage(f"share from {share.sender!r}: {len(plain)} bytes of plaintext")
        n = shamir.SHARE_BYTES
        self._held[share.sender] = (shamir.decode_y(plain[:n]), shamir.decode_y(plain[n:]))

    def consistency(self, survivors: Sequence[str]) -> ConsistencyProof:
        """Stage 3: sign the survivor list. SurvivorClaimedDropped when this client (which sent
        its masked input) is not on it; InconsistentView for unknown ids; RoundAborted when
        fewer than min_clients survived."""
        self._advance(Stage.CONSISTENCY)
        if self.id not in survivors:
            raise SurvivorClaimedDropped(f"client {self.id!r} sent its masked input but is listed as dropped")
        if len(set(survivors)) != len(survivors) or not set(survivors) <= set(self.roster):
            raise InconsistentView(f"client {self.id!r}: survivor list has duplicates or unknown clients")
        if len(survivors) < self.params.min_clients:
            raise RoundAborted(f"round {self.params.round}: {len(survivors)} survivors, need {self.params.min_clients}")
        self.survivors = sorted(survivors)
        message = survivors_message(self.params.round, self.survivors)
        return ConsistencyProof(self.id, self.device_key.sign(message))

    def unmask(self, survivors: Sequence[str], proofs: Sequence[ConsistencyProof]) -> list[RevealedShare]:
        """Stage 4: seed shares of surviving owners, mask-key shares of dropped ones (never both
        for one owner). InconsistentView when the list differs from the signed one or fewer than
        this client's threshold of survivors signed it; ForgedMessage for a bad signature."""
        self._advance(Stage.UNMASK)
        p = self.params
        if self.survivors is None or sorted(survivors) != self.survivors:
            raise InconsistentView(f"client {self.id!r}: the survivor list changed after the consistency check")
        message = survivors_message(p.round, self.survivors)
        signers = set()
        for proof in proofs:
            if proof.client_id not in self.survivors:
                raise InconsistentView(f"client {self.id!r}: consistency proof from non-survivor {proof.client_id!r}")
            try:
                verify(self.device_keys[proof.client_id], proof.signature, message,
                       f"survivor list signed by {proof.client_id!r}")
            except AuthError as exc:
                raise ForgedMessage(str(exc)) from None
            signers.add(proof.client_id)
        need = max(p.min_clients, graph.threshold(len(self.neighbours), p.threshold_fraction))
        if len(signers) < need:
            raise InconsistentView(f"client {self.id!r}: {len(signers)} survivors signed the list, need {need}")
        alive = set(self.survivors)
        x = self.index[self.id]
        return [RevealedShare(owner, SEED, x, shamir.encode_y(ys)) if owner in alive
                else RevealedShare(owner, MASK_KEY, x, shamir.encode_y(yk))
                for owner, (ys, yk) in sorted(self._held.items())]
