"""Mutated ONNX models (the converter parses untrusted bytes): random attribute values, input
names, input dims, initializer dims, extra attributes and opset versions on the ONNX node-case
models. Each must convert (optimizer on) and run, or fail with an EdgerunError: never another
exception, never a hang."""

from __future__ import annotations

import random
import signal

import numpy as np
import onnx
import pytest
from onnx import helper

from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter
from edgerun.runtime.errors import EdgerunError
from tests.converters.conformance.cases import node_cases

SECONDS = 20  # per model: far above any honest case here; more means a hang


def _mutate(model: onnx.ModelProto, rng: random.Random) -> onnx.ModelProto:
    m = onnx.ModelProto.FromString(model.SerializeToString())
    g = m.graph
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(6)
        if kind == 0 and g.node:
            node = rng.choice(g.node)
            if node.attribute:
                a = rng.choice(node.attribute)
                if a.type == onnx.AttributeProto.INT:
                    a.i = rng.choice([-1, 0, 1, 2, 7, -100, 2**40])
                elif a.type == onnx.AttributeProto.INTS and len(a.ints):
                    a.ints[rng.randrange(len(a.ints))] = rng.choice([-1, 0, 5, 2**33])
                elif a.type == onnx.AttributeProto.FLOAT:
                    a.f = rng.choice([float("nan"), -1.0, 0.0, 1e30])
                elif a.type == onnx.AttributeProto.STRING:
                    a.s = rng.choice([b"", b"bogus", b"\xff"])
        elif kind == 1 and g.node:
            node = rng.choice(g.node)
            if node.input:
                node.input[rng.randrange(len(node.input))] = rng.choice(["", "nope", *(i.name for i in g.input)])
        elif kind == 2 and g.input:
            dims = rng.choice(g.input).type.tensor_type.shape.dim
            if dims:
                dims[rng.randrange(len(dims))].dim_value = rng.choice([0, 1, 3, 1000])
        elif kind == 3 and g.initializer:
            init = rng.choice(g.initializer)
            if init.dims:
                init.dims[0] = rng.choice([0, 1, 2])
        elif kind == 4 and g.node:
            rng.choice(g.node).attribute.append(
                helper.make_attribute(rng.choice(["axis", "perm", "to", "mode"]), rng.choice([3, [0, 0], "x"])))
        elif kind == 5:
            m.opset_import[0].version = rng.choice([1, 6, 9, 13, 30])
    return m


class _TooSlow(Exception):
    pass


def _alarm(signum, frame):  # noqa: ANN001
    raise _TooSlow


def _fuzz(models: list[onnx.ModelProto], rng: random.Random, count: int) -> list[str]:
    """Mutate and run `count` models drawn from `models`; what went wrong other than an EdgerunError."""
    unexpected = []
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for _ in range(count):
            model = _mutate(rng.choice(models), rng)
            signal.alarm(SECONDS)
            try:
                it = Interpreter(from_onnx(model), device="cpu")
                feeds = {name: np.asarray(np.random.default_rng(0).random([d if d >= 0 else 2 for d in info.shape]) * 3)
                         .astype(info.dtype) for name, info in it.signatures["serving_default"].inputs.items()}
                it.run(feeds)
            except EdgerunError:
                pass
            except _TooSlow:
                unexpected.append(f"hang over {SECONDS} s: {model.graph.name}")
            except Exception as exc:  # noqa: BLE001 - collected, reported below
                unexpected.append(f"{type(exc).__name__}: {exc} ({model.graph.name})")
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    return unexpected


@pytest.mark.parametrize("seed", range(4))
def test_mutated_onnx_models_convert_and_run_or_fail_cleanly(seed: int) -> None:
    unexpected = _fuzz([c.model for c in node_cases()[seed::25]], random.Random(seed), 40)
    assert not unexpected, unexpected[:5]


# The op families and element types added last: detection, sampling grids, signal processing,
# scikit-learn's ai.onnx.ml, low-bit casts and quantization, random generators.
NEWER = ("nonmaxsuppression", "gridsample", "affine_grid", "dft", "stft", "window", "melweight", "tensorscatter",
         "swiglu", "bernoulli", "ai_onnx_ml", "cast_", "castlike", "quantizelinear", "bitcast")


@pytest.mark.parametrize("seed", range(3))
def test_mutated_models_of_the_newer_op_families_fail_cleanly(seed: int) -> None:
    models = [c.model for c in node_cases() if any(f in c.name for f in NEWER) and "expanded" not in c.name]
    assert len(models) > 100
    unexpected = _fuzz(models, random.Random(100 + seed), 60)
    assert not unexpected, unexpected[:5]
