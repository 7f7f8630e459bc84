"""Round parameters and the messages of the secure-aggregation stages (paired with the proto
messages of federated/protos/federated.proto, converted in federated.secagg.wire)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgerun.federated.secagg.errors import ConfigurationError
from edgerun.federated.secagg.quantize import Quantization
from edgerun.federated.stages import Stage

SEED = "seed"  # share of a client's self-mask seed b_u
MASK_KEY = "mask_key"  # share of a client's mask private key s_u


@dataclass(frozen=True)
class SecAggParams:
    """What every party of one round agrees on (sent in the round config).

    length: ring elements per client; neighbours: k of SecAgg+ (complete graph when the
    cohort has at most `complete_below` clients); threshold_fraction: shares needed out of
    a client's degree + 1 holders; min_clients: fewer at any stage aborts the round;
    graph_seed: 32 bytes the coordinator draws with `secrets`; cohort: clients selected for
    the round (0: not stated). A client refuses a roster of fewer than
    graph.threshold(cohort - 1, threshold_fraction) clients (more than `threshold_fraction`
    of the cohort), so a coordinator cannot shrink the roster to isolate it."""

    round: int
    quantization: Quantization
    length: int
    graph_seed: bytes
    neighbours: int = 20
    complete_below: int = 0
    threshold_fraction: float = 0.5
    min_clients: int = 2
    cohort: int = 0

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ConfigurationError(f"length must be >= 1, got {self.length}")
        if len(self.graph_seed) != 32:
            raise ConfigurationError(f"graph_seed must be 32 bytes, got {len(self.graph_seed)}")
        if self.min_clients < 2:
            raise ConfigurationError(f"min_clients must be >= 2 (a sum of one is its input), got {self.min_clients}")
        if not 0.5 <= self.threshold_fraction < 1:
            raise ConfigurationError(f"threshold_fraction must be in [0.5, 1), got {self.threshold_fraction}")
        if self.neighbours < 2:
            raise ConfigurationError(f"neighbours must be >= 2, got {self.neighbours}")
        if self.cohort < 0:
            raise ConfigurationError(f"cohort must be >= 0, got {self.cohort}")

    def to_config(self) -> dict[str, Any]:
        q = self.quantization
        return {"round": self.round, "bits": q.bits, "clip_range": q.clip_range, "levels": q.levels,
                "length": self.length, "graph_seed": self.graph_seed.hex(), "neighbours": self.neighbours,
                "complete_below": self.complete_below, "threshold_fraction": self.threshold_fraction,
                "min_clients": self.min_clients, "cohort": self.cohort}

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> SecAggParams:
        """ConfigurationError for missing or out-of-range values (including a missing cohort)."""
        try:
            q = Quantization(int(c["bits"]), float(c["clip_range"]), int(c["levels"]))
            params = cls(int(c["round"]), q, int(c["length"]), bytes.fromhex(c["graph_seed"]), int(c["neighbours"]),
                         int(c["complete_below"]), float(c["threshold_fraction"]), int(c["min_clients"]),
                         int(c["cohort"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"bad secure-aggregation config: {exc!r}") from None
        if params.cohort < params.min_clients:  # a round config must state its cohort
            raise ConfigurationError(f"cohort {params.cohort} is below min_clients {params.min_clients}")
        return params


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 0: two X25519 public keys (share encryption, masks), a commitment to the
    self-mask seed, all signed with the client's enrolled Ed25519 device key."""

    client_id: str
    encryption_key: bytes
    mask_key: bytes
    seed_commitment: bytes
    signature: bytes


@dataclass(frozen=True)
class EncryptedShare:
    """Stage 1: the holder's shares of the sender's seed and mask key, AES-GCM sealed."""

    sender: str
    recipient: str
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class ConsistencyProof:
    """Stage 3: a survivor's Ed25519 signature of the survivor list."""

    client_id: str
    signature: bytes


@dataclass(frozen=True)
class RevealedShare:
    """Stage 4: one share (x, y) of `owner`'s seed (owner survived) or mask key (owner dropped)."""

    owner: str
    kind: str
    x: int
    y: bytes


@dataclass
class StageReply:
    """The coordinator's answer to every message (or poll): the open stage, whether it waits
    for this client, and what the client needs for it (roster with device keys for SHARE,
    inbox for MASKED, survivors for CONSISTENCY, survivors and proofs for UNMASK)."""

    stage: Stage
    expects_you: bool = False
    roster: list[tuple[AdvertiseKeys, bytes]] = field(default_factory=list)  # (keys, device key)
    inbox: list[EncryptedShare] = field(default_factory=list)
    survivors: list[str] = field(default_factory=list)
    proofs: list[ConsistencyProof] = field(default_factory=list)
    message: str = ""
    retry_after: float = 0.05
