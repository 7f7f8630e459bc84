"""converters.gradient_op: ONNX's training-preview Gradient, rewritten at import into ordinary ops.

Gradients are compared with central finite differences (float64) of the sum of y, which
onnxruntime computes from the forward graph alone (the Gradient seeds y with ones), or with
closed forms; then the refusals, each by its message.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgerun.converters.onnx_backend import EdgerunBackend
from edgerun.converters.onnx_import import from_onnx
from edgerun.runtime.errors import ConversionError
from tests.converters.conformance.cases import model_cases
from tests.gradcheck import numerical_gradient

PREVIEW = "ai.onnx.preview.training"
RNG = np.random.default_rng(0)


def _info(name: str, array: np.ndarray | None = None, elem: int = TensorProto.DOUBLE) -> onnx.ValueInfoProto:
    if array is None:
        return helper.make_tensor_value_info(name, elem, None)
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape)


def _model(nodes: list, inputs: dict[str, np.ndarray], outputs: list, constants: dict | None = None,
           opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [_info(n, a) for n, a in inputs.items()], outputs,
                              initializer=[numpy_helper.from_array(a, n) for n, a in (constants or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(PREVIEW, 1)])
    model.ir_version = 8
    return model


def gradient_node(xs: list[str], y: str, zs: list[str] = (), fed: list[str] | None = None,
                  outputs: list[str] | None = None) -> onnx.NodeProto:
    """Gradient(xs, zs, y) fed `fed` (default: the named tensors), outputs d_<x>."""
    attrs = {"xs": list(xs), "y": y} | ({"zs": list(zs)} if zs else {})
    return helper.make_node("Gradient", fed or [*xs, *zs], outputs or [f"d_{x}" for x in xs], name="grad",
                            domain=PREVIEW, **attrs)


def run_gradient(nodes: list, feeds: dict, xs: list[str], y: str, constants: dict | None = None,
                 **gradient_args) -> list[np.ndarray]:
    """The Gradient's outputs, through from_onnx, the .erm and the interpreter."""
    node = gradient_node(xs, y, **gradient_args)
    outputs = [_info(name, elem=helper.np_dtype_to_tensor_dtype(next(iter(feeds.values())).dtype))
               for name in node.output if name]
    model = _model([*nodes, node], feeds, outputs, constants)
    return list(EdgerunBackend.prepare(model).run(feeds))


def finite_differences(nodes: list, values: dict, y: str, name: str) -> np.ndarray:
    """d sum(y) / d values[name] by central differences; onnxruntime runs the forward graph."""
    import onnxruntime as ort

    forward = _model(nodes, values, [_info(y)])
    session = ort.InferenceSession(forward.SerializeToString(), providers=["CPUExecutionProvider"])
    return numerical_gradient(lambda v: float(np.sum(session.run([y], {**values, name: v})[0])), values[name])


def away_from_zero(shape: tuple) -> np.ndarray:
    """float64 values with |v| >= 0.2, so no finite difference straddles Relu's kink."""
    v = RNG.standard_normal(shape)
    return np.asarray(np.sign(v) * (0.2 + np.abs(v)))


def node(op: str, inputs: list[str], output: str, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=output, **attrs)


# --- against finite differences --------------------------------------------------------------

SMALL = {  # name: (nodes, input shapes); y is "y", every input is differentiated
    "add_broadcast": ([node("Add", ["a", "b"], "y")], {"a": (2, 3), "b": (3,)}),
    "mul_broadcast": ([node("Mul", ["a", "b"], "y")], {"a": (2, 3), "b": (1, 3)}),
    "matmul": ([node("MatMul", ["a", "b"], "y")], {"a": (2, 3), "b": (3, 4)}),
    "relu": ([node("Relu", ["a"], "y")], {"a": (2, 3)}),
    "sigmoid": ([node("Sigmoid", ["a"], "y")], {"a": (2, 3)}),
    "add_then_mul_scalar": ([node("Add", ["a", "b"], "c"), node("Mul", ["c", "a"], "y")], {"a": (), "b": ()}),
    "relu_of_matmul": ([node("MatMul", ["a", "b"], "c"), node("Relu", ["c"], "y")], {"a": (3, 2), "b": (2, 2)}),
}


@pytest.mark.parametrize("case", sorted(SMALL))
def test_small_graphs_match_finite_differences(case: str) -> None:
    nodes, shapes = SMALL[case]
    feeds = {name: away_from_zero(shape) for name, shape in shapes.items()}
    grads = run_gradient(nodes, feeds, list(feeds), "y")
    for name, grad in zip(feeds, grads, strict=True):
        assert grad.shape == feeds[name].shape and grad.dtype == np.float64
        np.testing.assert_allclose(grad, finite_differences(nodes, feeds, "y", name), rtol=1e-6, atol=1e-8)


MLP = [node("MatMul", ["x", "w1"], "xw1"), node("Add", ["xw1", "b1"], "z1"), node("Relu", ["z1"], "h"),
       node("MatMul", ["h", "w2"], "hw2"), node("Add", ["hw2", "b2"], "out")]


def mlp_values() -> tuple[dict, dict]:
    """(graph inputs, weights) of the 2-layer MLP 3-5-2 on a batch of 4."""
    feeds = {"x": RNG.standard_normal((4, 3))}
    weights = {"w1": RNG.standard_normal((3, 5)), "b1": RNG.standard_normal(5), "w2": RNG.standard_normal((5, 2)),
               "b2": RNG.standard_normal(2)}
    return feeds, weights


def test_mlp_gradients_of_every_weight_and_the_input() -> None:
    """The weights are initializers (the Gradient reads them where they are); y is the (4, 2)
    output, seeded with ones: the gradient of its sum."""
    feeds, weights = mlp_values()
    xs = ["w1", "b1", "w2", "b2", "x"]
    grads = run_gradient(MLP, feeds, xs, "out", constants=weights)
    for name, grad in zip(xs, grads, strict=True):
        want = finite_differences(MLP, feeds | weights, "out", name)
        np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7, err_msg=name)


def test_float32_gradients_keep_float32() -> None:
    feeds = {"a": away_from_zero((2, 3)).astype(np.float32), "b": away_from_zero((3,)).astype(np.float32)}
    da, db = run_gradient([node("Mul", ["a", "b"], "y")], feeds, ["a", "b"], "y")
    assert da.dtype == db.dtype == np.float32
    np.testing.assert_allclose(da, np.broadcast_to(feeds["b"], (2, 3)), rtol=1e-6)
    np.testing.assert_allclose(db, feeds["a"].sum(axis=0), rtol=1e-6)


# --- the spec's cases: inputs as evaluation points, zs, intermediate xs ----------------------

def test_the_inputs_are_the_values_at_which_the_gradient_is_taken() -> None:
    """Gradient(xs=["a"]) fed a1: the forward graph is taken again at a = a1."""
    nodes = [node("Sigmoid", ["a"], "s"), node("Mul", ["s", "a"], "y")]
    feeds = {"a": away_from_zero((3,)), "a1": away_from_zero((3,))}
    (grad,) = run_gradient(nodes, feeds, ["a"], "y", fed=["a1"])
    want = finite_differences(nodes, {"a": feeds["a1"]}, "y", "a")
    assert not np.allclose(want, finite_differences(nodes, {"a": feeds["a"]}, "y", "a"))
    np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-8)


def test_zs_are_fed_but_not_differentiated() -> None:
    """y = x @ w with zs=["x"] fed x2: dy/dw = x2^T @ ones."""
    nodes = [node("MatMul", ["x", "w"], "y")]
    feeds = {"x": RNG.standard_normal((4, 3)), "w": RNG.standard_normal((3, 2)), "x2": RNG.standard_normal((4, 3))}
    (grad,) = run_gradient(nodes, feeds, ["w"], "y", zs=["x"], fed=["w", "x2"])
    np.testing.assert_allclose(grad, feeds["x2"].T @ np.ones((4, 2)), rtol=1e-12)


@pytest.mark.parametrize("fed", ["h", "h1"])
def test_an_intermediate_tensor_as_x(fed: str) -> None:
    """dy/dh for y = h * w, h = Relu(x): w broadcast, whatever value h is fed."""
    nodes = [node("Relu", ["x"], "h"), node("Mul", ["h", "w"], "y")]
    feeds = {"x": away_from_zero((2, 3)), "w": RNG.standard_normal(3), "h1": RNG.standard_normal((2, 3))}
    (grad,) = run_gradient(nodes, feeds, ["h"], "y", zs=["w"], fed=[fed, "w"])
    np.testing.assert_allclose(grad, np.broadcast_to(feeds["w"], (2, 3)), rtol=1e-12)


def test_x_reaching_y_only_through_a_shape_gets_zeros() -> None:
    """y = Reshape(d, Shape(x)): y depends on x, but only through a shape, so dy/dx = 0."""
    nodes = [node("Shape", ["x"], "shape"), node("Reshape", ["d", "shape"], "y")]
    feeds = {"x": RNG.standard_normal((2, 3)), "d": RNG.standard_normal(6)}
    dx, dd = run_gradient(nodes, feeds, ["x", "d"], "y")
    np.testing.assert_array_equal(dx, np.zeros((2, 3)))
    np.testing.assert_array_equal(dd, np.ones(6))


def test_an_omitted_output_is_skipped() -> None:
    feeds = {"a": RNG.standard_normal(3), "b": RNG.standard_normal(3)}
    (db,) = run_gradient([node("Mul", ["a", "b"], "y")], feeds, ["a", "b"], "y", outputs=["", "d_b"])
    np.testing.assert_allclose(db, feeds["a"], rtol=1e-12)


def test_a_gradient_of_a_gradient() -> None:
    """y = a * a: the first Gradient gives 2a, the second 2 (the spec's high-order use). y is
    declared a scalar, so the first seed is a constant that the second does not differentiate."""
    nodes = [node("Mul", ["a", "a"], "y"), gradient_node(["a"], "y"),
             helper.make_node("Gradient", ["a"], ["d2_a"], name="grad2", domain=PREVIEW, xs=["a"], y="d_a")]
    a = np.array(1.5)
    model = _model(nodes, {"a": a}, [_info("d_a", a), _info("d2_a", a)])
    model.graph.value_info.append(_info("y", a))
    np.testing.assert_allclose(EdgerunBackend.prepare(model).run([a]), [2 * a, 2.0], rtol=1e-12)


# --- the conformance models at other points, and the rewrite's result --------------------------

CLOSED_FORMS = {  # conformance case -> (a, b) -> its outputs
    "test_gradient_of_add": lambda a, b: (a + b, np.ones_like(a), np.ones_like(b)),
    "test_gradient_of_add_and_mul": lambda a, b: ((a + b) * a, 2 * a + b, a),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_conformance_models_match_closed_forms(name: str) -> None:
    (case,) = [c for c in model_cases("simple") if c.name == name]
    rep = EdgerunBackend.prepare(case.model)
    (inputs, expected), = case.data_sets
    for got, want in zip(rep.run(inputs), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    a, b = np.float32(RNG.standard_normal()), np.float32(RNG.standard_normal())
    for got, want in zip(rep.run([np.array(a), np.array(b)]), CLOSED_FORMS[name](a, b), strict=True):
        assert got.dtype == np.float32 and got.shape == ()
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_the_converted_graph_holds_ordinary_ops_only() -> None:
    (case,) = [c for c in model_cases("simple") if c.name == "test_gradient_of_add_and_mul"]
    graph = from_onnx(case.model, optimize=False)
    assert "Gradient" not in {n.op_type for n in graph.nodes}
    assert {n.op_type for n in graph.nodes} >= {"Add", "Mul", "Identity"}


# --- refusals --------------------------------------------------------------------------------

def _refusal(nodes: list, feeds: dict, xs: list[str], y: str, **gradient_args) -> str:
    with pytest.raises(ConversionError) as info:
        run_gradient(nodes, feeds, xs, y, **gradient_args)
    return str(info.value)


def test_an_x_that_y_does_not_depend_on_is_refused() -> None:
    """The spec makes xs and zs "the minimal independent variable set that determines" y."""
    feeds = {"a": RNG.standard_normal(3), "b": RNG.standard_normal(3), "q": RNG.standard_normal(3)}
    message = _refusal([node("Add", ["a", "b"], "y")], feeds, ["a", "q"], "y")
    assert message == ("Gradient node 'grad': y 'y' does not depend on 'q'; the spec makes xs and zs the minimal "
                       "set of tensors that determine y")


@pytest.mark.parametrize(("attr", "args"), [("xs", {"xs": ["a", "nope"], "y": "y", "fed": ["a", "a"]}),
                                             ("y", {"xs": ["a"], "y": "nope"}),
                                             ("zs", {"xs": ["a"], "y": "y", "zs": ["nope"], "fed": ["a", "a"]})])
def test_an_unknown_tensor_name_is_refused(attr: str, args: dict) -> None:
    feeds = {"a": RNG.standard_normal(3)}
    with pytest.raises(ConversionError) as info:
        run_gradient([node("Relu", ["a"], "y")], feeds, **args)
    assert str(info.value) == (f"Gradient node 'grad': attribute {attr!r} names 'nope', which is no graph input, "
                               "initializer or output of an earlier node")


def test_a_y_computed_after_the_gradient_is_refused() -> None:
    feeds = {"a": RNG.standard_normal(3)}
    model = _model([gradient_node(["a"], "y"), node("Relu", ["a"], "y")], feeds, [_info("d_a"), _info("y")])
    with pytest.raises(ConversionError, match="attribute 'y' names 'y', which is no graph input"):
        from_onnx(model)


def test_an_op_without_gradient_rule_is_named_with_the_gradient_node() -> None:
    """ReduceLogSumExp has no gradient rule (converters.training.rules) yet."""
    feeds, weights = mlp_values()
    nodes = [*MLP, helper.make_node("ReduceLogSumExp", ["out"], ["total"], name="sum", keepdims=0)]
    message = _refusal(nodes, feeds | weights, ["w1"], "total")
    assert message == "Gradient node 'grad': node 'sum': op 'ReduceLogSumExp' has no gradient"


def test_an_integer_x_is_refused() -> None:
    feeds = {"n": np.arange(3), "a": RNG.standard_normal(3)}
    nodes = [node("Cast", ["n"], "nf", to=TensorProto.DOUBLE), node("Add", ["nf", "a"], "y")]
    message = _refusal(nodes, feeds, ["n"], "y")
    assert message == "Gradient node 'grad': xs 'n' is int64; Gradient differentiates float16, float and double"


def test_inputs_that_do_not_match_xs_and_zs_are_refused() -> None:
    feeds = {"a": RNG.standard_normal(3), "b": RNG.standard_normal(3)}
    message = _refusal([node("Add", ["a", "b"], "y")], feeds, ["a", "b"], "y", fed=["a"])
    assert message == "Gradient node 'grad': expected 2 inputs (one per tensor of xs and zs), got 1"


def test_unsupported_ops_beside_a_gradient_are_listed_without_it() -> None:
    feeds = {"a": RNG.standard_normal(3)}
    nodes = [helper.make_node("NoSuchOp", ["a"], ["y"], name="odd"), gradient_node(["a"], "y")]
    model = _model(nodes, feeds, [_info("d_a")])
    with pytest.raises(ConversionError, match=r"unsupported ops: NoSuchOp \(odd\)") as info:
        from_onnx(model, check=False)
    assert "Gradient" not in str(info.value).split("; supported:")[0]
