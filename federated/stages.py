"""The named stages of a federated round, written once.

A plain round is select -> fit -> aggregate -> evaluate; a secure round replaces fit with
the secure-aggregation protocol, whose stages run in the order of `SECAGG`:
advertise -> share -> masked -> consistency -> unmask, then done (or aborted). The
coordinator's workflows (federated.rounds), its protocol driver (secagg.session), the
in-process protocol run (secagg.workflow), both halves of the protocol (secagg.server,
secagg.client) and the device's driver (secagg.device) all take the order from here.

The values are the wire names (SecAggRequest.stage, SecAggReply.stage), so a `Stage`
compares equal to the string a peer sends.
"""

from __future__ import annotations

import enum


class Stage(enum.StrEnum):
    """One stage of a round (or the end of the secure-aggregation protocol)."""

    SELECT = "select"  # the strategy picks clients and the round config; the round opens
    FIT = "fit"  # plain rounds: selected clients train and upload their deltas
    ADVERTISE = "advertise"  # secure rounds: clients advertise signed public keys
    SHARE = "share"  # ... send Shamir shares, encrypted for their neighbours
    MASKED = "masked"  # ... upload masked inputs
    CONSISTENCY = "consistency"  # ... sign the survivor list
    UNMASK = "unmask"  # ... reveal shares; the coordinator removes the masks
    AGGREGATE = "aggregate"  # the strategy aggregates; the new model is published
    EVALUATE = "evaluate"  # selected clients evaluate the new model
    DONE = "done"  # the secure-aggregation protocol finished
    ABORTED = "aborted"  # ... or was aborted
    POLL = "poll"  # not a stage: the message that asks for the open stage (no payload)

    def __repr__(self) -> str:
        return repr(self.value)  # messages name a stage as its peers do: 'advertise'


SECAGG = (Stage.ADVERTISE, Stage.SHARE, Stage.MASKED, Stage.CONSISTENCY, Stage.UNMASK)


def following(stage: Stage) -> Stage:
    """The secure-aggregation stage after `stage` (DONE after the last). ValueError for a
    stage that is not one of SECAGG."""
    index = SECAGG.index(stage)
    return SECAGG[index + 1] if index + 1 < len(SECAGG) else Stage.DONE


def passed(stage: Stage, acted: set[Stage]) -> bool:
    """True when `stage` (the open one) comes after a protocol stage not in `acted`: a
    client that did not act in it was left out of the round."""
    order = (*SECAGG, Stage.DONE)
    if stage not in order:
        return False
    return any(s not in acted for s in order[: order.index(stage)])
