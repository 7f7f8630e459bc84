"""The stage order (federated.stages) and the round workflows built from it (federated.rounds)."""

from __future__ import annotations

import pytest

from edgerun.federated.rounds import PLAIN_ROUND, SECURE_ROUND, workflow_for
from edgerun.federated.stages import SECAGG, Stage, following, passed


def test_the_protocol_stages_follow_one_another_then_done():
    walked, stage = [], Stage.ADVERTISE
    while stage is not Stage.DONE:
        walked.append(stage)
        stage = following(stage)
    assert walked == list(SECAGG) == ["advertise", "share", "masked", "consistency", "unmask"]


def test_following_refuses_a_stage_outside_the_protocol():
    with pytest.raises(ValueError):
        following(Stage.FIT)


@pytest.mark.parametrize(("stage", "acted", "left_out"), [
    (Stage.SHARE, {Stage.ADVERTISE}, False),
    (Stage.MASKED, {Stage.ADVERTISE}, True),
    (Stage.DONE, set(SECAGG), False),
    (Stage.ABORTED, set(), False),
])
def test_passed_says_when_a_client_was_left_out(stage, acted, left_out):
    assert passed(stage, acted) is left_out


def test_stages_read_as_their_wire_names():
    assert Stage.MASKED == "masked" and f"{Stage.MASKED}" == "masked" and repr(Stage.MASKED) == "'masked'"


def test_workflows_are_the_documented_sequences_of_stages():
    assert [s.stage for s in PLAIN_ROUND] == [Stage.SELECT, Stage.FIT, Stage.AGGREGATE, Stage.EVALUATE]
    assert [s.stage for s in SECURE_ROUND] == [Stage.SELECT, *SECAGG, Stage.AGGREGATE, Stage.EVALUATE]
    assert workflow_for({"secagg": {}}) is SECURE_ROUND and workflow_for({}) is PLAIN_ROUND
