"""Constant folding at prepare: small constant expressions fold, ones much bigger than their inputs
(fold bombs) stay as nodes."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.runtime import GraphBuilder, Interpreter
from edgerun.runtime.errors import ModelError
from edgerun.runtime.graph import Graph


def outer_add(n: int) -> Graph:
    g = GraphBuilder()
    x = g.input("x", np.float32, (1,))
    a = g.constant("a", np.ones((n, 1), np.float32))
    b = g.constant("b", np.ones((1, n), np.float32))
    g.output(g.op("Add", [g.op("Add", [a, b]), x]), "y")
    return g.build()


def test_a_constant_expression_much_bigger_than_its_inputs_is_not_folded():
    it = Interpreter(outer_add(2500))  # 25 MB result from 20 KB of constants
    assert it.peak_activation_bytes >= 2 * 2500 * 2500 * 4
    with pytest.raises(ModelError, match="memory budget"):
        Interpreter(outer_add(2500), memory_budget=1 << 20)


def test_small_constant_expressions_are_still_folded():
    assert Interpreter(outer_add(8)).peak_activation_bytes == 8 * 8 * 4
