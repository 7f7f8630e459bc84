"""The coordinator's half of a secure-aggregation round, as a state machine.

Stages: federated.stages.SECAGG, then done (or aborted).
`receive_*` checks one client's message for the open stage and raises a specific
SecAggError (the message is then ignored; the round goes on without it); `close()`
ends the open stage, aborting the round when fewer than min_clients took part.
The server adds masked vectors into one running sum as they arrive, so it never
holds an individual input, masked or not, beyond the call that receives it; in
`finish()` it rebuilds survivors' self-mask seeds and dropped clients' mask keys
(never both for one client) and removes the masks.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from edgerun.federated.auth import AuthError, verify
from edgerun.federated.secagg import crypto, graph, prg, shamir
from edgerun.federated.secagg.client import seed_commitment, survivors_message, verify_roster
from edgerun.federated.secagg.errors import (
    BothSharesRevealed,
    ForgedMessage,
    InconsistentView,
    MalformedMessage,
    MalformedVector,
    RoundAborted,
    SecAggError,
    StageError,
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
    StageReply,
)
from edgerun.federated.secagg.quantize import add, subtract
from edgerun.federated.stages import Stage, following

MAX_SUBSETS = 32  # t-subsets of revealed shares tried per secret before a reconstruction is refused


class SecAggServer:
    """One round over the selected clients; `device_keys` maps id -> enrolled Ed25519 key."""

    def __init__(self, params: SecAggParams, selected: Sequence[str], device_keys: Mapping[str, bytes]) -> None:
        self.params, self.selected = params, set(selected)
        self.device_keys = {c: device_keys[c] for c in selected}
        self.stage = Stage.ADVERTISE
        self.failure: str | None = None
        self.roster: dict[str, AdvertiseKeys] = {}
        self.neighbours: dict[str, list[str]] = {}
        self.shares: dict[str, list[EncryptedShare]] = {}  # sender -> its shares
        self.masked_sum = np.zeros(params.length, dtype=np.uint32)
        self.survivors: list[str] = []  # U3: masked input received
        self.proofs: dict[str, ConsistencyProof] = {}
        self.revealed: dict[str, list[RevealedShare]] = {}  # revealer -> shares
        self.excluded: dict[str, str] = {}  # client -> why (MalformedMessage): treated as dropped
        self.withdrawn: set[str] = set()  # clients known to have dropped out: no stage waits for them
        self.unmaskers: set[str] = set()  # signers of the survivor list that will reveal shares (see close)

    # ------------------------------------------------------------ stage control
    def _expect(self, stage: Stage, client_id: str, members: object) -> None:
        if self.stage != stage:
            raise StageError(f"round {self.params.round}: {stage!r} message from {client_id!r} while in {self.stage!r}")
        if client_id not in members:  # type: ignore[operator]
            raise StageError(f"round {self.params.round}: client {client_id!r} is not part of stage {stage!r}")

    def expected(self) -> set[str]:
        """Clients whose message the open stage still waits for (never a withdrawn one)."""
        waiting = {Stage.ADVERTISE: self.selected - set(self.roster) - set(self.excluded),
                   Stage.SHARE: set(self.roster) - set(self.shares) - set(self.excluded),
                   Stage.MASKED: set(self.shares) - set(self.survivors),
                   Stage.CONSISTENCY: set(self.survivors) - set(self.proofs),
                   Stage.UNMASK: self.unmaskers - set(self.revealed)}.get(self.stage, set())
        return waiting - self.withdrawn

    def receive(self, stage: Stage, client_id: str, payload: Any) -> None:
        """One client message of `stage` (what SecAggClient's step for it returned), checked
        and recorded as the `receive_*` method of that stage does."""
        receivers = {Stage.ADVERTISE: self.receive_keys, Stage.SHARE: self.receive_shares,
                     Stage.MASKED: self.receive_masked, Stage.CONSISTENCY: self.receive_consistency,
                     Stage.UNMASK: self.receive_unmask}
        if stage not in receivers:
            raise StageError(f"round {self.params.round}: unknown secure-aggregation stage {stage!r}")
        receivers[stage](client_id, payload)

    def reply(self, client_id: str) -> StageReply:
        """What `client_id` is told in the open stage: whether it is expected and, if so,
        what it needs to act (the stage's inputs from the other clients)."""
        stage = self.stage
        reply = StageReply(stage, client_id in self.expected(), message=self.failure or "")
        if not reply.expects_you:
            return reply
        if stage is Stage.SHARE:
            reply.roster = [(self.roster[c], self.device_keys[c]) for c in sorted(self.roster)]
        elif stage is Stage.MASKED:
            reply.inbox = self.inbox(client_id)
        elif stage in (Stage.CONSISTENCY, Stage.UNMASK):
            reply.survivors = self.survivor_list()
            reply.proofs = self.proof_list() if stage is Stage.UNMASK else []
        return reply

    def close(self) -> None:
        """End the open stage. RoundAborted (and stage "aborted") when too few took part."""
        p, counts = self.params, {Stage.ADVERTISE: len(self.roster), Stage.SHARE: len(self.shares),
                                  Stage.MASKED: len(self.survivors), Stage.CONSISTENCY: len(self.proofs)}
        if self.stage in counts and counts[self.stage] < p.min_clients:
            self._abort(f"round {p.round}: {counts[self.stage]} clients finished stage {self.stage!r}, "
                        f"need {p.min_clients}")
        if self.stage is Stage.CONSISTENCY:
            # A client reveals its shares only when its threshold of survivors signed the list
            # (client.unmask); when too few of them will, no one is waited for in vain.
            self.unmaskers = {u for u in self.proofs if len(self.proofs) >= self._signers_needed(u)}
            if len(self.unmaskers) < p.min_clients:
                need = min(map(self._signers_needed, self.proofs), default=p.min_clients)
                self._abort(f"round {p.round}: {len(self.proofs)} survivors signed the list, clients need {need} "
                            "signatures before they reveal shares")
        if self.stage is Stage.ADVERTISE:
            need = graph.threshold(p.cohort - 1, p.threshold_fraction) if p.cohort else 0
            if len(self.roster) < need:  # clients would refuse this roster (client.share_keys)
                self._abort(f"round {p.round}: {len(self.roster)} of a cohort of {p.cohort} advertised keys, "
                            f"need {need}")
            ids = sorted(self.roster)
            self.neighbours = graph.neighbours(ids, p.neighbours, p.graph_seed, p.complete_below)
            self.index = {cid: i + 1 for i, cid in enumerate(ids)}
        self.stage = following(self.stage)

    def _signers_needed(self, client_id: str) -> int:
        """Signatures on the survivor list `client_id` needs before it unmasks (as client.unmask)."""
        p = self.params
        return max(p.min_clients, graph.threshold(len(self.neighbours[client_id]), p.threshold_fraction))

    def _abort(self, reason: str) -> None:
        self.stage, self.failure = Stage.ABORTED, reason
        self.masked_sum = np.zeros(0, dtype=np.uint32)
        raise RoundAborted(reason)

    # ------------------------------------------------------------ stages
    def receive_keys(self, client_id: str, keys: AdvertiseKeys) -> None:
        """Stage 0. ForgedMessage unless signed by the client's device key; MalformedMessage for
        keys or commitment not of 32 bytes or a low-order X25519 key (the client is left out of
        the roster, as if it had dropped, instead of aborting everyone's round); StageError twice."""
        self._expect(Stage.ADVERTISE, client_id, self.selected - set(self.roster) - set(self.excluded))
        if keys.client_id != client_id:
            raise ForgedMessage(f"keys of {keys.client_id!r} sent by {client_id!r}")
        verify_roster(self.params, {client_id: keys}, self.device_keys)
        try:
            crypto.check_public_key(keys.encryption_key, f"encryption key of {client_id!r}")
            crypto.check_public_key(keys.mask_key, f"mask key of {client_id!r}")
            if len(keys.seed_commitment) != 32:
                raise MalformedMessage(f"seed commitment of {client_id!r} must be 32 bytes, "
                                       f"got {len(keys.seed_commitment)}")
        except MalformedMessage as exc:
            self.excluded[client_id] = str(exc)
            raise
        self.roster[client_id] = keys

    def receive_shares(self, client_id: str, shares: Sequence[EncryptedShare]) -> None:
        """Stage 1. WrongRecipient unless there is exactly one share for each neighbour;
        MalformedMessage (the sender is left out) for a nonce or ciphertext of the wrong length."""
        self._expect(Stage.SHARE, client_id, set(self.roster) - set(self.shares) - set(self.excluded))
        recipients = sorted(s.recipient for s in shares)
        if any(s.sender != client_id for s in shares):
            raise ForgedMessage(f"client {client_id!r} sent shares in another client's name")
        size = 2 * shamir.SHARE_BYTES + crypto.TAG_BYTES
        for s in shares:
            if len(s.nonce) != crypto.NONCE_BYTES or len(s.ciphertext) != size:
                self.excluded[client_id] = "malformed share"
                raise MalformedMessage(f"client {client_id!r}: share for {s.recipient!r} has a "
                                       f"{len(s.nonce)}-byte nonce and {len(s.ciphertext)}-byte ciphertext, "
                                       f"need {crypto.NONCE_BYTES} and {size}")
        if recipients != self.neighbours[client_id]:
            raise WrongRecipient(f"client {client_id!r}: shares for {recipients} but its neighbours are "
                                 f"{self.neighbours[client_id]}")
        self.shares[client_id] = list(shares)

    def inbox(self, client_id: str) -> list[EncryptedShare]:
        """The shares addressed to `client_id` by clients that finished stage 1."""
        if self.stage is not Stage.MASKED or client_id not in self.shares:
            raise StageError(f"round {self.params.round}: no inbox for {client_id!r} in stage {self.stage!r}")
        return [s for sender in self.neighbours[client_id] if sender in self.shares
                for s in self.shares[sender] if s.recipient == client_id]

    def receive_masked(self, client_id: str, masked: np.ndarray) -> None:
        """Stage 2: add a masked vector into the running sum. MalformedVector for the wrong
        dtype, length or an element outside Z_{2^b}."""
        self._expect(Stage.MASKED, client_id, set(self.shares) - set(self.survivors))
        p, bits = self.params, self.params.quantization.bits
        y = np.asarray(masked)
        if y.dtype != np.uint32 or y.shape != (p.length,):
            raise MalformedVector(f"client {client_id!r}: masked vector must be {p.length} uint32 values, "
                                  f"got {y.dtype}{list(y.shape)}")
        if bits < 32 and y.size and int(y.max()) >> bits:
            raise MalformedVector(f"client {client_id!r}: masked vector has elements outside Z_2^{bits}")
        self.masked_sum = add(self.masked_sum, y, bits)
        self.survivors.append(client_id)

    def survivor_list(self) -> list[str]:
        return sorted(self.survivors)

    def receive_consistency(self, client_id: str, proof: ConsistencyProof) -> None:
        """Stage 3. ForgedMessage unless the proof is the client's signature of the survivor list."""
        self._expect(Stage.CONSISTENCY, client_id, set(self.survivors) - set(self.proofs))
        try:
            verify(self.device_keys[client_id], proof.signature,
                   survivors_message(self.params.round, self.survivor_list()), f"survivor list of {client_id!r}")
        except AuthError as exc:
            raise ForgedMessage(str(exc)) from None
        if proof.client_id != client_id:
            raise ForgedMessage(f"consistency proof of {proof.client_id!r} sent by {client_id!r}")
        self.proofs[client_id] = proof

    def proof_list(self) -> list[ConsistencyProof]:
        return [self.proofs[c] for c in sorted(self.proofs)]

    def receive_unmask(self, client_id: str, revealed: Sequence[RevealedShare]) -> None:
        """Stage 4. BothSharesRevealed when one owner gets both kinds; InconsistentView for a
        seed share of a dropped owner or a mask-key share of a survivor (the two sets are
        disjoint); WrongRecipient for a share the revealer cannot hold or a wrong x."""
        self._expect(Stage.UNMASK, client_id, set(self.proofs) - set(self.revealed))
        alive, x = set(self.survivors), self.index[client_id]
        holdable = {client_id} | {o for o in self.neighbours[client_id] if o in self.shares}
        kinds: dict[str, str] = {}
        for share in revealed:
            if share.owner in kinds:
                both = kinds[share.owner] != share.kind
                error = BothSharesRevealed if both else ForgedMessage
                raise error(f"client {client_id!r} revealed {'both shares' if both else 'twice'} for {share.owner!r}")
            kinds[share.owner] = share.kind
            if share.owner not in holdable or share.x != x:
                raise WrongRecipient(f"client {client_id!r} revealed a share of {share.owner!r} it cannot hold")
            want = SEED if share.owner in alive else MASK_KEY
            if share.kind != want:
                raise InconsistentView(f"client {client_id!r} revealed a {share.kind} share of {share.owner!r}, "
                                       f"which {'survived' if share.owner in alive else 'dropped'}")
            shamir.decode_y(share.y)
        self.revealed[client_id] = list(revealed)

    # ------------------------------------------------------------ result
    def finish(self) -> np.ndarray:
        """The sum mod 2^b of the survivors' inputs. RoundAborted when some needed secret has
        fewer than its threshold of shares or does not match its commitment / public key."""
        if self.stage is not Stage.UNMASK:
            raise StageError(f"round {self.params.round}: finish() in stage {self.stage!r}")
        p, bits = self.params, self.params.quantization.bits
        if len(self.revealed) < p.min_clients:
            self._abort(f"round {p.round}: {len(self.revealed)} clients revealed shares, need {p.min_clients}")
        collected: dict[str, list[tuple[int, int]]] = {}
        for shares in self.revealed.values():
            for s in shares:
                collected.setdefault(s.owner, []).append((s.x, shamir.decode_y(s.y)))
        total = self.masked_sum
        for u in sorted(self.survivors):
            commitment = self.roster[u].seed_commitment
            seed = self._rebuild(u, collected, "seed",
                                 lambda secret, u=u, c=commitment: seed_commitment(p.round, u, secret) == c)
            total = subtract(total, prg.expand(seed, p.length, bits), bits)
        alive = set(self.survivors)
        for u in sorted(set(self.shares) - alive):
            raw = self._rebuild(u, collected, "mask key", lambda secret, u=u: crypto.public_bytes(
                crypto.private_key_from(secret)) == self.roster[u].mask_key)
            key = crypto.private_key_from(raw)
            for v in self.neighbours[u]:
                if v in alive:
                    pairwise = prg.expand(crypto.agree(key, self.roster[v].mask_key, "mask", p.round, u, v),
                                          p.length, bits)
                    total = subtract(total, pairwise, bits) if v < u else add(total, pairwise, bits)
        self.stage = Stage.DONE
        return total

    def _rebuild(self, owner: str, collected: dict[str, list[tuple[int, int]]], what: str,
                 valid: Callable[[bytes], bool]) -> bytes:
        """`owner`'s secret from t of its revealed shares, checked by `valid` (its commitment or
        public key). One wrong share must not sink the round: when the t lowest-x shares give a
        wrong secret and more than t were revealed, the other t-subsets (all when there are at
        most MAX_SUBSETS, else MAX_SUBSETS - 1 drawn with `secrets`) are tried before the round
        is aborted."""
        t = graph.threshold(len(self.neighbours[owner]), self.params.threshold_fraction)
        shares = sorted(collected.get(owner, []))
        if len(shares) < t:
            self._abort(f"round {self.params.round}: {len(shares)} shares of {owner!r} revealed, need {t}")
        if math.comb(len(shares), t) <= MAX_SUBSETS:  # all of them, the t lowest x first
            tries = [list(subset) for subset in itertools.combinations(shares, t)]
        else:
            pick = secrets.SystemRandom()
            tries = [shares[:t], *(sorted(pick.sample(shares, t)) for _ in range(MAX_SUBSETS - 1))]
        for subset in tries:
            try:
                secret = shamir.combine(subset, 32)
                if valid(secret):
                    return secret
            except (SecAggError, ValueError):
                continue
        self._abort(f"round {self.params.round}: rebuilt {what} of {owner!r} does not match its "
                    f"{'commitment' if what == 'seed' else 'public key'} ({len(tries)} subsets of {len(shares)} "
                    f"shares tried)")
        raise AssertionError("unreachable")
