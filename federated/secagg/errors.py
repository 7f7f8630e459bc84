"""The errors of secure aggregation; each names the client and stage it concerns."""

from __future__ import annotations

from edgerun.runtime.errors import EdgerunError


class SecAggError(EdgerunError):
    """Base class: a secure-aggregation message or configuration that is refused."""


class ConfigurationError(SecAggError):
    """Parameters that could make the protocol wrong or insecure (e.g. a sum that could wrap)."""


class StageError(SecAggError):
    """A message for a stage that is not open, or from a client not expected in it."""


class ForgedMessage(SecAggError):
    """A signature or AEAD tag that does not verify (forged, altered or replayed elsewhere)."""


class WrongRecipient(SecAggError):
    """A share addressed to another client, or a share list that does not match the graph."""


class MalformedVector(SecAggError):
    """A masked vector of the wrong length or with elements outside Z_{2^b}."""


class MalformedMessage(SecAggError):
    """A public key, commitment, nonce or ciphertext of the wrong length, or a low-order
    X25519 point: the sender is excluded from the round (as if it had dropped)."""


class ImplausibleWeight(SecAggError):
    """The unmasked total weight W is outside [survivors * one step, survivors * 1]: some
    client put a weight outside (0, 1] in its weight slot (it would rescale the average)."""


class BothSharesRevealed(SecAggError):
    """A client revealed the self-mask share and the mask-key share of the same peer."""


class SurvivorClaimedDropped(SecAggError):
    """The coordinator lists as dropped a client that delivered its masked input."""


class InconsistentView(SecAggError):
    """Survivor lists or their signatures disagree (the consistency check failed)."""


class RoundAborted(SecAggError):
    """Too few clients (or shares) to finish; the sum is not computed and nothing is revealed."""
