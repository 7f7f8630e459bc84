"""WHILE, IF and CALL_ONCE: small models with bodies in other subgraphs, and TensorFlow-made
fixtures, each compared with LiteRT running the same file; bad bodies refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgerun.converters.tflite.ops.combine  # noqa: F401  (CONCATENATION)
import edgerun.converters.tflite.ops.control  # noqa: F401
import edgerun.converters.tflite.ops.elementwise  # noqa: F401
from edgerun import Interpreter
from edgerun.converters.tflite import from_tflite
from edgerun.runtime.errors import ConversionError
from tests.converters.tflite.builder import TFLiteBuilder, litert_run

FIXTURES = Path(__file__).parent / "fixtures"


def run_both(data: bytes, feeds: dict[str, np.ndarray], optimize: bool = True) -> tuple[list, list]:
    """(ours, LiteRT's) outputs; `feeds` in the model's input order."""
    got = list(Interpreter(from_tflite(data, optimize=optimize)).run(feeds).values())
    return got, litert_run(data, list(feeds.values()))


def assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def add_counter_cond(b: TFLiteBuilder, limit: int | None = None) -> int:
    """cond(i, [n,] ...): i < limit (a constant) or i < n (the second loop value)."""
    g = b.subgraph("cond")
    i = g.input("i", (), "INT32")
    if limit is None:
        n = g.input("n", (), "INT32")
    else:
        n = g.constant("limit", np.array(limit, np.int32))
    g.input("x", (2, 3))
    g.input("acc", (2, 3))
    keep = g.tensor("keep", (), "BOOL")
    g.op("LESS", [i, n], [keep])
    g.output(keep)
    return g.index


def add_counter_body(b: TFLiteBuilder, with_n: bool) -> int:
    """body(i, [n,] x, acc) = (i + 1, [n,] x, acc * 2 + x): n and x pass straight through."""
    g = b.subgraph("body")
    i = g.input("i", (), "INT32")
    n = g.input("n", (), "INT32") if with_n else None
    x = g.input("x", (2, 3))
    acc = g.input("acc", (2, 3))
    one = g.constant("one", np.array(1, np.int32))
    two = g.constant("two", np.full((2, 3), 2, np.float32))
    i2, doubled, acc2 = g.tensor("i2", (), "INT32"), g.tensor("doubled", (2, 3)), g.tensor("acc2", (2, 3))
    g.op("ADD", [i, one], [i2], "AddOptions")
    g.op("MUL", [acc, two], [doubled], "MulOptions")
    g.op("ADD", [doubled, x], [acc2], "AddOptions")
    for t in (i2, n, x, acc2):
        if t is not None:
            g.output(t)
    return g.index


def counter_model(limit: int | None) -> bytes:
    """while i < limit (or < the input n): acc = acc * 2 + x; outputs every loop value."""
    b = TFLiteBuilder()
    values = [b.input("i", (), "INT32")]
    if limit is None:
        values.append(b.input("n", (), "INT32"))
    values += [b.input("x", (2, 3)), b.input("acc", (2, 3))]
    cond, body = add_counter_cond(b, limit), add_counter_body(b, limit is None)
    outs = [b.tensor(f"out_{k}", b.tensors[v]["shape"], b.tensors[v]["type"]) for k, v in enumerate(values)]
    b.op("WHILE", values, outs, "WhileOptions", cond_subgraph_index=cond, body_subgraph_index=body)
    for o in outs:
        b.output(o)
    return b.build()


def feeds(n: int | None = None, start: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(start)
    f = {"i": np.array(start, np.int32)}
    if n is not None:
        f["n"] = np.array(n, np.int32)
    f["x"] = rng.standard_normal((2, 3)).astype(np.float32)
    f["acc"] = rng.standard_normal((2, 3)).astype(np.float32)
    return f


@pytest.mark.parametrize("start", [0, 3, 5, 9])
@pytest.mark.parametrize("optimize", [True, False])
def test_counter_loop_matches_litert(start, optimize):
    got, want = run_both(counter_model(5), feeds(start=start), optimize)
    assert_same(got, want)
    assert int(got[0]) == max(start, 5)


@pytest.mark.parametrize("n", [0, 1, 4, 7])
def test_loop_whose_trip_count_is_an_input(n):
    got, want = run_both(counter_model(None), feeds(n))
    assert_same(got, want)
    assert int(got[0]) == n


def growing_model() -> bytes:
    """while i < 4: i += 1; acc = concat(acc, acc): a loop value whose shape changes."""
    b = TFLiteBuilder()
    i, acc = b.input("i", (), "INT32"), b.input("acc", (1, 3), signature=(-1, 3))
    cond = b.subgraph("cond")
    ci = cond.input("i", (), "INT32")
    cond.input("acc", (1, 3), signature=(-1, 3))
    keep = cond.tensor("keep", (), "BOOL")
    cond.op("LESS", [ci, cond.constant("limit", np.array(4, np.int32))], [keep])
    cond.output(keep)
    body = b.subgraph("body")
    bi, bacc = body.input("i", (), "INT32"), body.input("acc", (1, 3), signature=(-1, 3))
    i2, grown = body.tensor("i2", (), "INT32"), body.tensor("grown", (2, 3), signature=(-1, 3))
    body.op("ADD", [bi, body.constant("one", np.array(1, np.int32))], [i2], "AddOptions")
    body.op("CONCATENATION", [bacc, bacc], [grown], "ConcatenationOptions", axis=0)
    body.output(i2)
    body.output(grown)
    outs = [b.tensor("out_i", (), "INT32"), b.tensor("out_acc", (1, 3), signature=(-1, 3))]
    b.op("WHILE", [i, acc], outs, "WhileOptions", cond_subgraph_index=cond.index, body_subgraph_index=body.index)
    for o in outs:
        b.output(o)
    return b.build()


@pytest.mark.parametrize("start, rows", [(0, 16), (2, 4), (5, 1)])
def test_loop_value_whose_shape_grows(start, rows):
    x = np.arange(3, dtype=np.float32).reshape(1, 3)
    got, want = run_both(growing_model(), {"i": np.array(start, np.int32), "acc": x})
    assert_same(got, want)
    assert got[1].shape == (rows, 3)


def test_converted_loop_survives_saving(tmp_path):
    from edgerun import save_model

    save_model(from_tflite(nested_model()), tmp_path / "nested.erm")
    x = np.ones((2, 3), np.float32)
    got = Interpreter(tmp_path / "nested.erm").run({"flag": np.array(True), "n": np.array(3, np.int32), "x": x})
    np.testing.assert_array_equal(got["y"], np.full((2, 3), 7, np.float32))


def nested_model() -> bytes:
    """main: IF(flag, n, x): then = a WHILE (i = 0, acc = 0 made inside) returning acc;
    else = x * x."""
    b = TFLiteBuilder()
    flag, n, x = b.input("flag", (), "BOOL"), b.input("n", (), "INT32"), b.input("x", (2, 3))
    cond, body = add_counter_cond(b), add_counter_body(b, True)
    then = b.subgraph("then")
    tn, tx = then.input("n", (), "INT32"), then.input("x", (2, 3))
    i0 = then.constant("i0", np.array(0, np.int32))
    acc0 = then.constant("acc0", np.zeros((2, 3), np.float32))
    outs = [then.tensor("wi", (), "INT32"), then.tensor("wn", (), "INT32"), then.tensor("wx", (2, 3)),
            then.tensor("wacc", (2, 3))]
    then.op("WHILE", [i0, tn, tx, acc0], outs, "WhileOptions", cond_subgraph_index=cond, body_subgraph_index=body)
    then.output(outs[3])
    other = b.subgraph("else")
    other.input("n", (), "INT32")
    ex = other.input("x", (2, 3))
    sq = other.tensor("sq", (2, 3))
    other.op("MUL", [ex, ex], [sq], "MulOptions")
    other.output(sq)
    y = b.tensor("y", (2, 3))
    b.op("IF", [flag, n, x], [y], "IfOptions", then_subgraph_index=then.index, else_subgraph_index=other.index)
    b.output(y)
    return b.build()


@pytest.mark.parametrize("flag, n", [(True, 0), (True, 3), (True, 6), (False, 3)])
def test_while_nested_in_if(flag, n):
    x = np.random.default_rng(n).standard_normal((2, 3)).astype(np.float32)
    got, want = run_both(nested_model(), {"flag": np.array(flag), "n": np.array(n, np.int32), "x": x})
    assert_same(got, want)
    expected = x * x if not flag else sum(x * 2.0 ** k for k in range(n))
    np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("limit", [0, 3, 6])
def test_tensorflow_while_fixture(limit):
    data = (FIXTURES / "while_f32.tflite").read_bytes()
    x = np.random.default_rng(limit).standard_normal((1, 8)).astype(np.float32)
    it = Interpreter(from_tflite(data))
    got = list(it.run({"limit": np.array(limit, np.float32), "x": x}).values())
    assert_same(got, litert_run(data, [np.array(limit, np.float32), x]))


@pytest.mark.parametrize("flag", [-1.0, 0.0, 2.0])
def test_tensorflow_if_fixture_takes_both_branches(flag):
    data = (FIXTURES / "if_f32.tflite").read_bytes()
    x = np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)
    got = Interpreter(from_tflite(data)).run({"flag": np.array(flag, np.float32), "x": x})
    want = litert_run(data, [x, np.array(flag, np.float32)])
    (value,) = got.values()
    np.testing.assert_allclose(value, want[0], rtol=1e-5, atol=1e-6)


def test_call_once_of_an_empty_init_subgraph_is_dropped():
    b = TFLiteBuilder()
    x = b.input("x", (3,))
    y = b.tensor("y", (3,))
    init = b.subgraph("init")
    b.op("CALL_ONCE", [], [], "CallOnceOptions", init_subgraph_index=init.index)
    b.op("ADD", [x, x], [y], "AddOptions")
    b.output(y)
    data = b.build()
    value = np.arange(3, dtype=np.float32)
    got, want = run_both(data, {"x": value})
    assert_same(got, want)
    assert "CALL_ONCE" not in str(from_tflite(data).op_histogram())


# --- refused bodies ----------------------------------------------------------------------


def while_model(cond_index: int = 1, body_index: int = 2, body_inputs: int = 1, body_type: str = "INT32",
                body_while: bool = False) -> bytes:
    """WHILE over one INT32 value with a configurable (possibly wrong) body."""
    b = TFLiteBuilder()
    i = b.input("i", (), "INT32")
    out = b.tensor("out", (), "INT32")
    cond = b.subgraph("cond")
    ci = cond.input("i", (), "INT32")
    keep = cond.tensor("keep", (), "BOOL")
    cond.op("LESS", [ci, cond.constant("limit", np.array(3, np.int32))], [keep])
    cond.output(keep)
    body = b.subgraph("body")
    ins = [body.input(f"v{k}", (), body_type) for k in range(body_inputs)]
    res = body.tensor("res", (), body_type)
    if body_while:  # the body loops over itself
        body.op("WHILE", ins[:1], [res], "WhileOptions", cond_subgraph_index=cond.index,
                body_subgraph_index=body.index)
    else:
        body.op("ADD", [ins[0], ins[0]], [res], "AddOptions")
    body.output(res)
    b.op("WHILE", [i], [out], "WhileOptions", cond_subgraph_index=cond_index, body_subgraph_index=body_index)
    b.output(out)
    return b.build()


@pytest.mark.parametrize("kwargs, message", [
    ({"cond_index": 7}, "cond subgraph 7 does not exist (the model has 3)"),
    ({"body_index": -1}, "body subgraph -1 does not exist"),
    ({"body_index": 0}, "body subgraph 0 calls itself"),
    ({"body_while": True}, "body subgraph 2 calls itself (recursion is not allowed)"),
    ({"body_inputs": 2}, "body subgraph 2 has 2 inputs, the operator passes 1"),
    ({"body_type": "FLOAT32"}, "body subgraph 2: input 0 is FLOAT32, the operator's is INT32"),
])
def test_bad_while_bodies_are_refused(kwargs, message):
    with pytest.raises(ConversionError, match="WHILE") as info:
        from_tflite(while_model(**kwargs))
    assert message in str(info.value)


def test_cond_must_make_one_bool():
    b = TFLiteBuilder()
    i = b.input("i", (), "INT32")
    out = b.tensor("out", (), "INT32")
    cond = b.subgraph("cond")
    ci = cond.input("i", (), "INT32")
    cond.output(ci)
    b.op("WHILE", [i], [out], "WhileOptions", cond_subgraph_index=1, body_subgraph_index=1)
    b.output(out)
    with pytest.raises(ConversionError, match="cond subgraph 1 must make one BOOL output"):
        from_tflite(b.build())


def if_model(cond_type: str = "BOOL", cond_shape=(), then_outputs: int = 1, else_index: int = 2) -> bytes:
    b = TFLiteBuilder()
    flag, x = b.input("flag", cond_shape, cond_type), b.input("x", (3,))
    y = b.tensor("y", (3,))
    then = b.subgraph("then")
    tx = then.input("x", (3,))
    for _ in range(then_outputs):
        then.output(tx)
    other = b.subgraph("else")
    ex = other.input("x", (3,))
    neg = other.tensor("neg", (3,))
    other.op("NEG", [ex], [neg])
    other.output(neg)
    b.op("IF", [flag, x], [y], "IfOptions", then_subgraph_index=1, else_subgraph_index=else_index)
    b.output(y)
    return b.build()


@pytest.mark.parametrize("flag", [True, False])
def test_if_with_a_branch_passing_its_input_through(flag):
    x = np.array([1.0, -2.0, 3.5], np.float32)
    got, want = run_both(if_model(), {"flag": np.array(flag), "x": x})
    assert_same(got, want)
    np.testing.assert_array_equal(got[0], x if flag else -x)


@pytest.mark.parametrize("kwargs, message", [
    ({"cond_type": "INT32"}, "the condition must be one BOOL element, got INT32 []"),
    ({"cond_shape": (2,)}, "the condition must be one BOOL element, got BOOL [2]"),
    ({"then_outputs": 2}, "then subgraph 1 has 2 outputs, the operator passes 1"),
    ({"else_index": 9}, "else subgraph 9 does not exist"),
    ({"else_index": 0}, "else subgraph 0 calls itself"),
])
def test_bad_if_branches_are_refused(kwargs, message):
    with pytest.raises(ConversionError, match="IF") as info:
        from_tflite(if_model(**kwargs))
    assert message in str(info.value)


def test_call_once_with_inputs_is_refused():
    b = TFLiteBuilder()
    x = b.input("x", (3,))
    init = b.subgraph("init")
    init.input("x", (3,))
    b.op("CALL_ONCE", [x], [], "CallOnceOptions", init_subgraph_index=init.index)
    b.output(x)
    with pytest.raises(ConversionError, match="CALL_ONCE and its init subgraph must have no inputs and no outputs"):
        from_tflite(b.build())


def test_while_needs_loop_values_of_one_type_in_and_out():
    for inputs, out_type, message in (([], None, "has no loop values"),
                                      (["i"], "FLOAT32", "loop value 0 is INT32 in and FLOAT32 out")):
        b = TFLiteBuilder()
        ids = [b.input(name, (), "INT32") for name in inputs]
        outs = [b.tensor("out", (), out_type)] if out_type else []
        b.op("WHILE", ids, outs, "WhileOptions", cond_subgraph_index=0, body_subgraph_index=0)
        for o in outs:
            b.output(o)
        with pytest.raises(ConversionError, match=message):
            from_tflite(b.build())
