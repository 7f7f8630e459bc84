"""The pass manager and report: fixed point, pass selection, report lines."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.converters.optimize import DEFAULT_PASSES, PASSES, Pass, optimize
from edgerun.runtime.errors import ConversionError
from edgerun.runtime.graph import Graph
from tests.converters.optimize.helpers import convert, optimize_and_check
from tests.onnx_models import make_cnn, make_mlp


def test_default_passes_run_in_order_and_report() -> None:
    graph, report = optimize_and_check(make_cnn())
    assert [p.name for p in report.passes] == list(DEFAULT_PASSES) == list(PASSES)
    assert (report.nodes_before, report.nodes_after) == (13, 10)
    lines = report.lines()
    assert lines[0].startswith("optimized: 13 nodes -> 10 nodes")
    assert len(lines) == 1 + len(DEFAULT_PASSES)
    assert "  fold_batchnorm: 13 -> 12 nodes (BatchNormalization into Conv: 1)" in lines
    assert "  fuse_activations: 12 -> 10 nodes (Conv+Relu: 2)" in lines
    assert report.rounds == 2  # one that changes, one that finds nothing left


def test_second_optimize_changes_nothing() -> None:
    graph = convert(make_mlp())
    assert optimize(graph).changed
    again = optimize(graph)
    assert not again.changed and again.rounds == 1 and again.nodes_before == again.nodes_after


def test_unknown_pass_name() -> None:
    with pytest.raises(ConversionError, match="unknown optimizer pass 'nope'; known: remove_identity"):
        optimize(convert(make_mlp()), ["nope"])


def test_max_rounds_bounds_a_pass_that_always_changes() -> None:
    class Restless(Pass):
        name = "restless"

        def run(self, graph: Graph) -> dict[str, int]:
            return {"pokes": 1}

    report = optimize(convert(make_mlp()), [Restless()], max_rounds=3)
    assert report.rounds == 3 and report.passes[0].changes == {"pokes": 3}


def test_report_counts_constants() -> None:
    _, report = optimize_and_check(make_cnn(), {"x": np.zeros((1, 3, 16, 16), np.float32)})
    assert report.constants_before == 12 and report.constants_after == 8
