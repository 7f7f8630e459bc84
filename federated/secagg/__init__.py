"""Secure aggregation (Bonawitz et al. 2017, SecAgg+ neighbour graphs of Bell et al. 2020).

Small pure modules plus two state machines:
  shamir     t-of-n secret sharing over the prime 2^521 - 1
  crypto     X25519 agreement -> HKDF-SHA256 keys, AES-GCM share encryption, key signatures
  prg        AES-256-CTR mask expansion (never numpy's RNG)
  quantize   clip, fixed point in Z_{2^b}, the no-wrap check, packing
  graph      SecAgg+ neighbour graphs (random regular, complete for small cohorts)
  messages   the wire dataclasses of the stages
  client     one client's half (advertise -> share -> mask -> consistency -> unmask)
  server     the coordinator's half; it only ever sees masked vectors and the final sum
  workflow   one in-process round with dropouts (tests, benchmark, simulation), over a
             SecAggServer or the coordinator's protocol object (drive_round)
  update     model deltas + weight <-> ring vectors
  options    coordinator settings -> per-round parameters (no-wrap plan)
  session    the coordinator's network driver (stage deadlines, poll replies)
  cohorts    hierarchical rounds: cohorts of at most max_cohort clients, each unmasked on its
             own, their ring sums added (a cohort that aborts is dropped)
  device     the client's network driver (drives SecAggClient through a transport)
  wire       messages <-> protobuf
  simulate   deterministic in-process runs, secure vs plain (acceptance)

Threat model: clients take their peers' Ed25519 device keys (which sign the advertised
X25519 keys) from the coordinator. The scheme protects inputs against an honest-but-curious
coordinator (it follows the protocol and may collude with fewer than the threshold of
clients), not against an actively malicious coordinator that substitutes device keys, plays
all of a victim's peers itself and so unmasks the victim. Closing that needs device keys
certified by an enrolment CA whose key is pinned in every client (or an out-of-band key
directory), so that clients can verify peers' keys without trusting the coordinator.
Against a coordinator that only withholds messages, clients refuse to mask with fewer than
their threshold of holders or with a roster below a fraction of the stated cohort.
"""

from edgerun.federated.secagg.errors import SecAggError

__all__ = ["SecAggError"]
