"""Reference kernels against onnxruntime: one node, random inputs, one line per case.

Each case builds a one-node ONNX model, runs it in onnxruntime (the oracle) and runs
our kernel directly (resolve -> prepare -> run into NaN-filled outputs), then compares.
Inputs are read-only to prove kernels never write into them.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from edgerun.runtime.errors import ModelError, UnsupportedOpError
from edgerun.runtime.kernels import TensorSpec, resolve

# inputs that are model constants (initializers) unless a case says otherwise
CONSTANTS = {"Conv": (1, 2), "Gemm": (1, 2), "BatchNormalization": (1, 2, 3, 4), "Reshape": (1,)}
# inputs whose random values must be positive (variances)
POSITIVE = {"BatchNormalization": (4,)}
TOLERANCE = {np.dtype(np.float32): (1e-5, 1e-6), np.dtype(np.float64): (1e-12, 1e-12)}


def case(op, shapes, attrs=None, opset=17, dtype=np.float32, consts=None, outputs=1):
    """One comparison: `shapes` holds a shape (random input), an array (literal) or None."""
    shown = ",".join("x".join(map(str, s)) if isinstance(s, tuple) else "lit" for s in shapes)
    name = f"{op}{opset}-{np.dtype(dtype).name}-{shown}-{attrs or ''}"
    return pytest.param(op, shapes, attrs or {}, opset, dtype, consts, outputs, id=name)


def make_inputs(op, shapes, dtype, rng):
    arrays = []
    for i, shape in enumerate(shapes):
        if shape is None or isinstance(shape, np.ndarray):
            arrays.append(shape)
        elif np.dtype(dtype).kind == "f":
            data = rng.standard_normal(shape)
            arrays.append((np.abs(data) + 0.5 if i in POSITIVE.get(op, ()) else data).astype(dtype))
        else:
            data = rng.integers(-20, 20, shape)
            arrays.append(np.where(data == 0, 3, data).astype(dtype))  # no integer x/0 in ORT
    for a in arrays:
        if a is not None:
            a.flags.writeable = False
    return arrays


def onnx_model(op, arrays, attrs, opset, consts, out_specs):
    names = ["" if a is None else f"in{i}" for i, a in enumerate(arrays)]
    outs = [f"out{i}" for i in range(len(out_specs))]
    node = helper.make_node(op, names, outs, **attrs)
    feeds = [(names[i], a) for i, a in enumerate(arrays) if a is not None and i not in consts]

    def info(name, tensor):
        elem_type = helper.np_dtype_to_tensor_dtype(tensor.dtype)
        return helper.make_tensor_value_info(name, elem_type, tensor.shape)

    graph = helper.make_graph(
        [node], "g",
        [info(n, a) for n, a in feeds],
        [info(n, o) for n, o in zip(outs, out_specs, strict=True)],
        [numpy_helper.from_array(arrays[i], names[i]) for i in consts if i < len(arrays) and names[i]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.checker.check_model(model)
    return model.SerializeToString(), dict(feeds)


def run_ours(op, arrays, attrs, opset, consts, n_outputs=1):
    """resolve -> prepare -> run; outputs start as NaN (or a sentinel) so every write shows."""
    kernel = resolve("", op, opset, "n")(op, "n", dict(attrs), opset)
    specs = [None if a is None else TensorSpec(a.dtype, a.shape) for a in arrays]
    values = [a if i in consts else None for i, a in enumerate(arrays)]
    out_specs = kernel.prepare(specs, values)[:n_outputs]
    outputs = [np.full(s.shape, np.nan if s.dtype.kind == "f" else -7, s.dtype) for s in out_specs]
    kernel.run(arrays, outputs)
    return outputs


def check(op, shapes, attrs, opset, dtype, consts, n_outputs, seed=0):
    rng = np.random.default_rng(seed)
    consts = CONSTANTS.get(op, ()) if consts is None else consts
    arrays = make_inputs(op, shapes, dtype, rng)
    ours = run_ours(op, arrays, attrs, opset, consts, n_outputs)
    model, feeds = onnx_model(op, arrays, attrs, opset, consts, ours)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    theirs = session.run(None, feeds)
    for mine, expected in zip(ours, theirs, strict=True):
        assert mine.shape == expected.shape and mine.dtype == expected.dtype
        rtol, atol = TOLERANCE.get(mine.dtype, (0, 0))
        np.testing.assert_allclose(mine, expected, rtol=rtol, atol=atol)


ELEMENTWISE = [
    case("Add", [(3, 4), (3, 4)]),
    case("Add", [(2, 3, 4), (4,)]),
    case("Add", [(2, 1, 4), (3, 1)], opset=13),
    case("Add", [(), (2, 3)], dtype=np.int64),
    case("Sub", [(5,), (2, 5)], dtype=np.int32),
    case("Sub", [(2, 3, 1, 5), (4, 1)], dtype=np.float64),
    case("Mul", [(1,), (7,)]),
    case("Mul", [(2, 3), (2, 3)], dtype=np.int64, opset=7),
    case("Div", [(3, 4), (4,)]),
    case("Div", [(4, 5), (4, 5)], dtype=np.int32),
    case("Div", [(2, 6), (6,)], dtype=np.int64, opset=14),
    case("Relu", [(2, 3, 4)]),
    case("Relu", [(7,)], dtype=np.float64, opset=6),
    case("Relu", [(3, 3)], dtype=np.int32, opset=14),
    case("Sigmoid", [(2, 5)]),
    case("Sigmoid", [np.array([-200, -30, -1, 0, 1, 30, 200], np.float32)]),
    case("Tanh", [(4, 3)]),
    case("Tanh", [(5,)], dtype=np.float64),
]

DENSE = [
    case("MatMul", [(3, 4), (4, 5)]),
    case("MatMul", [(4,), (4, 5)]),
    case("MatMul", [(3, 4), (4,)]),
    case("MatMul", [(4,), (4,)]),
    case("MatMul", [(2, 3, 4), (4, 5)]),
    case("MatMul", [(2, 1, 3, 4), (5, 4, 2)]),
    case("MatMul", [(3, 4), (4, 2)], dtype=np.int32, opset=13),
    case("MatMul", [(2, 3, 4), (2, 4, 2)], dtype=np.int64),
    case("MatMul", [(3, 4), (4, 5)], dtype=np.float64),
    case("Gemm", [(3, 4), (4, 5), (5,)]),
    case("Gemm", [(4, 3), (4, 5), (1, 5)], {"transA": 1}),
    case("Gemm", [(3, 4), (5, 4), (3, 1)], {"transB": 1, "alpha": 0.5, "beta": 2.0}),
    case("Gemm", [(4, 3), (5, 4), (3, 5)], {"transA": 1, "transB": 1}, opset=9),
    case("Gemm", [(3, 4), (4, 5), ()], {"beta": -1.5}),
    case("Gemm", [(3, 4), (4, 5)], {"alpha": 2.0}, opset=11),
    case("Gemm", [(3, 4), (4, 5), (3, 5)], {"beta": 0.0}),
    case("Gemm", [(3, 4), (4, 5), (5,)], consts=()),
    case("Gemm", [(3, 4), (4, 5), (5,)], {"beta": 3.0}, consts=(1,)),
    case("Gemm", [(3, 4), (4, 5), (5,)], dtype=np.float64),
    case("Softmax", [(3, 5)], opset=11),
    case("Softmax", [(2, 3, 4)], {"axis": 0}, opset=11),
    case("Softmax", [(2, 3, 4)], {"axis": 2}, opset=11),
    case("Softmax", [(2, 3, 4, 2)], {"axis": -2}, opset=11),
    case("Softmax", [(2, 3, 4)], {"axis": 1}, opset=1),
    case("Softmax", [(2, 3, 4)], opset=13),
    case("Softmax", [(2, 3, 4)], {"axis": 0}, opset=13),
    case("Softmax", [(2, 3, 4)], {"axis": 1}, opset=13),
    case("Softmax", [(6,)], dtype=np.float64),
    case("BatchNormalization", [(2, 3, 4, 4), (3,), (3,), (3,), (3,)], opset=15),
    case("BatchNormalization", [(2, 3, 4, 4), (3,), (3,), (3,), (3,)], {"epsilon": 0.1}, consts=()),
    case("BatchNormalization", [(4, 3), (3,), (3,), (3,), (3,)], opset=9),
    case("BatchNormalization", [(2, 3, 5), (3,), (3,), (3,), (3,)], opset=14),
    case("BatchNormalization", [(1, 2, 3, 3), (2,), (2,), (2,), (2,)], opset=7),
]

CONV = [
    case("Conv", [(1, 3, 7, 7), (4, 3, 3, 3), (4,)]),
    case("Conv", [(2, 3, 8, 8), (5, 3, 3, 3), None], {"pads": [1, 1, 1, 1]}),
    case("Conv", [(1, 3, 9, 9), (4, 3, 3, 3), (4,)], {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    case("Conv", [(1, 2, 9, 9), (3, 2, 3, 3), (3,)], {"dilations": [2, 2]}),
    case("Conv", [(1, 2, 6, 7), (3, 2, 3, 2), (3,)], {"pads": [0, 1, 2, 0]}),
    case("Conv", [(1, 4, 7, 7), (6, 2, 3, 3), (6,)], {"group": 2}),
    case("Conv", [(2, 4, 6, 6), (4, 1, 3, 3), (4,)], {"group": 4, "pads": [1, 1, 1, 1]}),
    case("Conv", [(1, 4, 9, 9), (4, 1, 3, 3), None], {"group": 4, "strides": [2, 2]}),
    case("Conv", [(1, 3, 6, 6), (6, 1, 3, 3), (6,)], {"group": 3}),
    case("Conv", [(1, 3, 7, 8), (4, 3, 3, 3), (4,)], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    case("Conv", [(1, 3, 7, 8), (4, 3, 4, 4), (4,)], {"auto_pad": "SAME_LOWER"}),
    case("Conv", [(1, 3, 7, 8), (4, 3, 3, 3), (4,)], {"auto_pad": "VALID", "strides": [2, 1]}),
    case("Conv", [(2, 8, 5, 5), (16, 8, 1, 1), (16,)]),
    case("Conv", [(1, 8, 5, 5), (4, 8, 1, 1), None], {"strides": [2, 2]}),
    case("Conv", [(1, 3, 10), (2, 3, 3), (2,)], {"pads": [1, 2], "strides": [2]}),
    case("Conv", [(1, 2, 4, 5, 5), (3, 2, 2, 3, 3), (3,)], {"pads": [0, 1, 1, 1, 1, 0]}),
    case("Conv", [(1, 3, 6, 6), (4, 3, 3, 3), (4,)], {"kernel_shape": [3, 3]}, opset=11),
    case("Conv", [(1, 4, 6, 6), (4, 1, 3, 3), (4,)], {"group": 4}, consts=()),
    case("Conv", [(1, 3, 6, 6), (4, 3, 3, 3), (4,)], consts=()),
]

K2S2 = {"kernel_shape": [2, 2], "strides": [2, 2]}
K3S2 = {"kernel_shape": [3, 3], "strides": [2, 2]}
K3 = {"kernel_shape": [3, 3]}
POOL = [
    case("MaxPool", [(1, 3, 6, 6)], {"kernel_shape": [2, 2], "strides": [2, 2]}),
    case("MaxPool", [(2, 2, 7, 7)], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    case("MaxPool", [(1, 2, 6, 6)], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    case("MaxPool", [(1, 2, 7, 8)], {**K2S2, "ceil_mode": 1, "pads": [1, 0, 1, 1]}),
    case("MaxPool", [(1, 2, 8, 8)], {"kernel_shape": [2, 3], "dilations": [2, 2]}),
    case("MaxPool", [(1, 2, 7, 6)], {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    case("MaxPool", [(1, 2, 7, 6)], {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER"}),
    case("MaxPool", [(1, 2, 7, 6)], {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "VALID"}),
    case("MaxPool", [(1, 3, 9)], {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    case("MaxPool", [(1, 2, 4, 5, 5)], {"kernel_shape": [2, 2, 2]}),
    case("MaxPool", [(1, 2, 6, 6)], {**K3S2, "pads": [1, 1, 1, 1]}, outputs=2),
    case("MaxPool", [(2, 2, 5, 4)], {"kernel_shape": [2, 2], "storage_order": 1}, outputs=2),
    case("MaxPool", [(1, 2, 6, 6)], {"kernel_shape": [2, 2]}, dtype=np.float64, opset=8),
    case("AveragePool", [(1, 3, 6, 6)], {"kernel_shape": [2, 2], "strides": [2, 2]}),
    case("AveragePool", [(1, 2, 7, 7)], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    case("AveragePool", [(1, 2, 7, 7)], {**K3, "pads": [1, 2, 1, 0], "count_include_pad": 1}),
    case("AveragePool", [(1, 2, 6, 6)], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    case("AveragePool", [(1, 2, 6, 7)], {**K3S2, "ceil_mode": 1, "pads": [1] * 4, "count_include_pad": 1}),
    case("AveragePool", [(1, 2, 7, 6)], {**K3S2, "auto_pad": "SAME_UPPER"}),
    case("AveragePool", [(1, 2, 8, 8)], {"kernel_shape": [2, 2], "dilations": [2, 2]}, opset=19),
    case("AveragePool", [(1, 3, 9)], {"kernel_shape": [4], "strides": [3]}),
    case("AveragePool", [(1, 2, 5, 5)], {"kernel_shape": [2, 2]}, opset=7),
    case("GlobalAveragePool", [(2, 3, 5, 4)]),
    case("GlobalAveragePool", [(1, 4, 7)]),
    case("GlobalMaxPool", [(2, 3, 5, 4)]),
]

SHAPE = [
    case("Reshape", [(2, 3, 4), np.array([0, -1], np.int64)]),
    case("Reshape", [(2, 3, 4), np.array([-1], np.int64)], dtype=np.int64),
    case("Reshape", [(2, 3, 4), np.array([4, 0, 2], np.int64)], opset=5),
    case("Reshape", [(0, 3), np.array([3, 0], np.int64)], {"allowzero": 1}, opset=14),
    case("Reshape", [(2, 3), np.array([3, 2], np.int64)], dtype=np.int32),
    case("Flatten", [(2, 3, 4)]),
    case("Flatten", [(2, 3, 4)], {"axis": 0}),
    case("Flatten", [(2, 3, 4)], {"axis": 3}),
    case("Flatten", [(2, 3, 4, 5)], {"axis": -2}, dtype=np.int64),
    case("Transpose", [(2, 3, 4)]),
    case("Transpose", [(2, 3, 4, 5)], {"perm": [0, 2, 3, 1]}),
    case("Transpose", [(2, 3)], {"perm": [1, 0]}, dtype=np.int32),
    case("Concat", [(2, 3), (4, 3)], {"axis": 0}),
    case("Concat", [(2, 3, 4), (2, 1, 4), (2, 2, 4)], {"axis": 1}, dtype=np.int64),
    case("Concat", [(2, 3), (2, 5)], {"axis": -1}, opset=11),
    case("Concat", [(2, 3), (2, 3)], {"axis": 1}, opset=4),
    case("Identity", [(3, 4)]),
    case("Identity", [(2, 2)], dtype=np.int64),
]


@pytest.mark.parametrize("op, shapes, attrs, opset, dtype, consts, outputs", ELEMENTWISE + DENSE)
def test_dense_ops_match_onnxruntime(op, shapes, attrs, opset, dtype, consts, outputs):
    check(op, shapes, attrs, opset, dtype, consts, outputs)


@pytest.mark.parametrize("op, shapes, attrs, opset, dtype, consts, outputs", CONV + POOL)
def test_window_ops_match_onnxruntime(op, shapes, attrs, opset, dtype, consts, outputs):
    check(op, shapes, attrs, opset, dtype, consts, outputs)


@pytest.mark.parametrize("op, shapes, attrs, opset, dtype, consts, outputs", SHAPE)
def test_shape_ops_match_onnxruntime(op, shapes, attrs, opset, dtype, consts, outputs):
    check(op, shapes, attrs, opset, dtype, consts, outputs)


def test_conv_same_padding_with_dilation_matches_onnx_reference():
    # onnxruntime refuses SAME + dilations for Conv; the ONNX reference evaluator follows the spec
    from onnx.reference import ReferenceEvaluator

    attrs = {"auto_pad": "SAME_LOWER", "dilations": [2, 3], "strides": [2, 1]}
    arrays = make_inputs("Conv", [(1, 2, 9, 8), (3, 2, 3, 2), (3,)], np.float32, np.random.default_rng(0))
    ours = run_ours("Conv", arrays, attrs, 17, (1, 2))
    model, feeds = onnx_model("Conv", arrays, attrs, 17, (1, 2), ours)
    expected = ReferenceEvaluator(onnx.load_from_string(model)).run(None, feeds)[0]
    np.testing.assert_allclose(ours[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op, shapes, attrs", [
    ("Conv", [(1, 3, 7, 7), (4, 3, 3, 3), (4,)], {"pads": [1, 0, 0, 1]}),
    ("Conv", [(1, 4, 7, 7), (4, 1, 3, 3), (4,)], {"group": 4, "strides": [2, 2]}),
    ("Conv", [(1, 4, 6, 6), (8, 2, 1, 1), None], {"group": 2}),
    ("AveragePool", [(1, 2, 7, 7)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ("MaxPool", [(1, 2, 7, 7)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}),
])
def test_float64_agrees_with_float32(op, shapes, attrs):
    # onnxruntime has no float64 Conv/AveragePool: check float64 against our float32 instead
    consts = CONSTANTS.get(op, ())
    wide = make_inputs(op, shapes, np.float64, np.random.default_rng(1))
    narrow = [None if a is None else a.astype(np.float32) for a in wide]
    (y64,) = run_ours(op, wide, attrs, 19, consts)
    (y32,) = run_ours(op, narrow, attrs, 19, consts)
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, y32, rtol=1e-5, atol=1e-5)


def test_integer_div_truncates_and_division_by_zero_gives_zero():
    a = np.array([7, -7, 7, -7, 5, 0, -3], np.int32)
    b = np.array([2, 2, -2, -2, 0, 0, 4], np.int32)
    (q,) = run_ours("Div", [a, b], {}, 14, ())
    np.testing.assert_array_equal(q, [3, -3, -3, 3, 0, 0, 0])


def test_integer_gemm_matches_numpy():  # onnxruntime has no integer Gemm
    a = np.arange(12, dtype=np.int64).reshape(3, 4) - 5
    b = np.arange(20, dtype=np.int64).reshape(5, 4) % 7
    c = np.array([1, -2, 3, -4, 5], np.int64)
    (y,) = run_ours("Gemm", [a, b, c], {"transB": 1, "alpha": 2.0, "beta": 3.0}, 13, (1, 2))
    np.testing.assert_array_equal(y, 2 * a @ b.T + 3 * c)


def test_kernels_sharing_scratch_do_not_disturb_each_other():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    pads = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    first = run_ours("MaxPool", [x], pads, 17, ())[0]
    run_ours("AveragePool", [x], pads, 17, ())  # same scratch slot, zero padding
    np.testing.assert_array_equal(run_ours("MaxPool", [x], pads, 17, ())[0], first)


def test_scratch_is_per_thread():
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((1, 4, 16, 16)).astype(np.float32) for _ in range(8)]
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    attrs = {"pads": [1, 1, 1, 1]}
    serial = [run_ours("Conv", [x, w], attrs, 17, (1,))[0] for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda x: run_ours("Conv", [x, w], attrs, 17, (1,))[0], inputs))
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a, b)


def spec(shape, dtype=np.float32):
    return TensorSpec(np.dtype(dtype), tuple(shape))


I64 = np.int64
INVALID = [
    # op, opset, input specs, constant values by index, attrs, message fragment
    ("Add", 17, [spec((3, 4)), spec((5,))], {}, {}, "do not broadcast"),
    ("Add", 17, [spec((3,)), spec((3,), np.float64)], {}, {}, "dtypes differ"),
    ("Add", 17, [spec((3,))], {}, {}, "expected 2..2 inputs"),
    ("Add", 17, [spec((3,), bool), spec((3,), bool)], {}, {}, "expected a float"),
    ("Sigmoid", 17, [spec((3,), I64)], {}, {}, "expected a float"),
    ("MatMul", 17, [spec((3, 4)), spec((5, 6))], {}, {}, "inner dimensions"),
    ("MatMul", 17, [spec(()), spec((3,))], {}, {}, "rank >= 1"),
    ("MatMul", 17, [spec((2, 3, 4)), spec((3, 4, 5))], {}, {}, "do not broadcast"),
    ("Gemm", 17, [spec((3, 4)), spec((5, 6)), spec((6,))], {}, {}, "inner dimensions"),
    ("Gemm", 17, [spec((3, 4)), spec((4, 5)), spec((4,))], {}, {}, "does not broadcast"),
    ("Gemm", 17, [spec((2, 3, 4)), spec((4, 5))], {}, {}, "rank 2"),
    ("Gemm", 9, [spec((3, 4)), spec((4, 5))], {}, {}, "expected 3..3 inputs"),
    ("Gemm", 17, [spec((3, 4)), spec((4, 5))], {}, {"transA": 2}, "must be 0 or 1"),
    ("Softmax", 13, [spec((2, 3))], {}, {"axis": 2}, "out of range"),
    ("Softmax", 1, [spec((2, 3))], {}, {"axis": -3}, "out of range"),
    ("Conv", 17, [spec((1, 3, 5, 5)), spec((4, 2, 3, 3))], {}, {}, "group 1"),
    ("Conv", 17, [spec((1, 4, 5, 5)), spec((6, 2, 3, 3))], {}, {"group": 3}, "group 3"),
    ("Conv", 17, [spec((1, 4, 5, 5)), spec((6, 4, 3, 3))], {}, {"group": 0}, "group 0"),
    ("Conv", 17, [spec((1, 1, 2, 2)), spec((1, 1, 3, 3))], {}, {}, "does not fit"),
    ("Conv", 17, [spec((1, 1, 5, 5)), spec((1, 1, 3, 3))], {}, {"strides": [0, 1]}, "strides"),
    ("Conv", 17, [spec((1, 1, 5, 5)), spec((1, 1, 3, 3))], {}, {"dilations": [1]}, "dilations"),
    ("Conv", 17, [spec((1, 1, 5, 5)), spec((1, 1, 3, 3))], {}, {"pads": [1, 1, -1, 1]}, "pads"),
    ("Conv", 17, [spec((1, 1, 5, 5)), spec((1, 1, 3, 3))], {}, {"pads": [1, 1]}, "pads"),
    ("Conv", 17, [spec((1, 1, 5, 5)), spec((1, 1, 3, 3))], {}, {"auto_pad": "SAME"}, "auto_pad"),
    ("Conv", 17, [spec((1, 1, 5, 5)), spec((1, 1, 3, 3))], {}, {"kernel_shape": [2, 2]}, "kernel_shape"),
    ("Conv", 17, [spec((1, 1, 5, 5)), spec((1, 1, 3, 3))], {}, {"kernel_shape": "3x3"}, "list of ints"),
    ("Conv", 17, [spec((1, 1, 5, 5)), spec((1, 1, 3, 3))], {}, {"group": 1.5}, "expected an int"),
    ("Conv", 17, [spec((1, 1, 5, 5)), spec((2, 1, 3, 3)), spec((3,))], {}, {}, "B shape"),
    ("Conv", 17, [spec((1, 1, 5, 5)), spec((1, 1, 3, 3), np.float64)], {}, {}, "W dtype"),
    ("Conv", 17, [spec((1, 1, 5)), spec((1, 1, 3, 3))], {}, {}, "rank of X"),
    ("Conv", 17, [spec((5, 5)), spec((1, 1))], {}, {}, "rank >= 3"),
    ("Conv", 17, [spec((1, 1, 5, 5)), spec((1, 1, 3, 3)), None, None], {}, {}, "expected 2..3 inputs"),
    ("MaxPool", 17, [spec((1, 1, 5, 5))], {}, {}, "kernel_shape' is required"),
    ("MaxPool", 17, [spec((1, 1, 5, 5))], {}, {"kernel_shape": [2, 2], "pads": [2, 0, 0, 0]}, "smaller than"),
    ("MaxPool", 17, [spec((1, 1, 5, 5))], {}, {"kernel_shape": [2, 2], "ceil_mode": 2}, "must be 0 or 1"),
    ("MaxPool", 17, [spec((1, 1, 5, 5))], {}, {"kernel_shape": [6, 6]}, "does not fit"),
    ("MaxPool", 17, [spec((1, 1, 5, 5))], {}, {"kernel_shape": [2, 0]}, "kernel_shape"),
    ("AveragePool", 17, [spec((1, 1, 5, 5))], {}, {"kernel_shape": [2, 2, 2]}, "kernel_shape"),
    ("AveragePool", 17, [spec((1, 1, 5, 5), I64)], {}, {"kernel_shape": [2, 2]}, "expected a float"),
    ("GlobalAveragePool", 17, [spec((2, 3))], {}, {}, "rank >= 3"),
    ("BatchNormalization", 15, [spec((2, 3, 4)), *[spec((3,))] * 2, spec((4,)), spec((3,))], {}, {}, "mean"),
    ("Reshape", 17, [spec((2, 3)), spec((2,), I64)], {1: np.array([4, 2], I64)}, {}, "cannot reshape"),
    ("Reshape", 17, [spec((2, 3)), spec((2,), I64)], {1: np.array([-1, -1], I64)}, {}, "invalid"),
    ("Reshape", 17, [spec((2, 3)), spec((2,), I64)], {1: np.array([-1, 0], I64)}, {"allowzero": 1}, "allow"),
    ("Reshape", 17, [spec((2, 3)), spec((3,), I64)], {1: np.array([0, 0, 0], I64)}, {}, "lacks"),
    ("Reshape", 17, [spec((3, 0, 2)), spec((2,), I64)], {1: np.array([-1, 0], I64)}, {}, "cannot infer"),
    ("Reshape", 17, [spec((2, 3)), spec((2,), I64)], {}, {}, "must be known"),
    ("Reshape", 17, [spec((2, 3)), spec((2,))], {1: np.array([3.0, 2.0], np.float32)}, {}, "1-D ints"),
    ("Flatten", 17, [spec((2, 3))], {}, {"axis": 3}, "out of range"),
    ("Flatten", 9, [spec((2, 3))], {}, {"axis": -1}, "out of range"),
    ("Transpose", 17, [spec((2, 3, 4))], {}, {"perm": [0, 0, 1]}, "not a permutation"),
    ("Transpose", 17, [spec((2, 3, 4))], {}, {"perm": [1, 0]}, "not a permutation"),
    ("Concat", 17, [spec((2, 3)), spec((2, 3, 1))], {}, {"axis": 0}, "does not match"),
    ("Concat", 17, [spec((2, 3)), spec((3, 3))], {}, {"axis": 1}, "does not match"),
    ("Concat", 17, [spec((2, 3)), spec((2, 3), I64)], {}, {"axis": 0}, "dtype"),
    ("Concat", 17, [spec((2, 3)), spec((2, 3))], {}, {"axis": 2}, "out of range"),
    ("Concat", 17, [spec((2, 3)), spec((2, 3))], {}, {}, "'axis' is required"),
    ("Concat", 4, [spec((2, 3)), spec((2, 3))], {}, {"axis": -1}, "out of range"),
    ("Concat", 17, [spec((2, 3)), None], {}, {"axis": 0}, "omitted"),
]


@pytest.mark.parametrize("op, opset, specs, values, attrs, message", INVALID)
def test_invalid_nodes_raise_model_error(op, opset, specs, values, attrs, message):
    kernel = resolve("", op, opset, "bad")(op, "bad", attrs, opset)
    with pytest.raises(ModelError, match=message) as info:
        kernel.prepare(specs, [values.get(i) for i in range(len(specs))])
    assert "'bad'" in str(info.value)


@pytest.mark.parametrize("op, opset", [("Reshape", 4), ("Gemm", 0), ("Softmax", 0)])
def test_versions_before_the_first_kernel_are_unsupported(op, opset):
    with pytest.raises(UnsupportedOpError, match="older than the first supported"):
        resolve("", op, opset, "old")


def test_conv_in_batch_chunks_matches_onnxruntime(monkeypatch):
    from edgerun.runtime.kernels import conv

    monkeypatch.setattr(conv, "COLUMN_BUDGET", 200)  # one sample's columns are 27 * 25 > 200
    check("Conv", [(3, 3, 5, 5), (4, 3, 3, 3), (4,)], {"pads": [1, 1, 1, 1]}, 17, np.float32, None, 1)


# --- fuzzing: mutate the valid cases above; only ModelError may come out ---------------------

TEMPLATES = [p.values for p in ELEMENTWISE + DENSE + CONV + POOL + SHAPE] + [
    ("Gemm", [(3, 4), (5, 4), (5,)], {"transB": 1}, 13, np.int64, None, 1),
    ("Conv", [(1, 2, 5, 5), (2, 2, 3, 3), (2,)], {}, 17, np.float16, None, 1),
]
ATTR_KEYS = st.sampled_from([
    "axis", "perm", "kernel_shape", "strides", "pads", "dilations", "group", "auto_pad", "ceil_mode",
    "count_include_pad", "storage_order", "transA", "transB", "alpha", "beta", "epsilon",
    "allowzero", "spatial", "training_mode",
])
ATTR_VALUES = st.one_of(
    st.integers(-3, 8), st.sampled_from([2**31, -(2**40), 2**62, True]),
    st.lists(st.integers(-2, 6), max_size=7), st.lists(st.integers(-(2**40), 2**40), max_size=4),
    st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "", "bogus", b"VALID", b"\xff"]),
    st.floats(), st.none(), st.just([1.5, 2.0]), st.just(np.array([[1, 2]])),
)
DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32, np.bool_, np.uint8])


def random_array(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    if spec.dtype.kind == "f":
        return rng.standard_normal(spec.shape).astype(spec.dtype)
    return rng.integers(-3, 6, spec.shape).astype(spec.dtype)


def mutate(draw, specs: list, attrs: dict) -> int | None:
    """Apply one random mutation in place; returns a new opset when it mutates that."""
    kind = draw(st.sampled_from(["attr", "attr", "drop_attr", "dim", "rank", "dtype", "inputs", "opset"]))
    i = draw(st.integers(0, max(0, len(specs) - 1)))
    target = specs[i] if specs else None
    if kind == "attr":
        attrs[draw(ATTR_KEYS)] = draw(ATTR_VALUES)
    elif kind == "drop_attr" and attrs:
        attrs.pop(draw(st.sampled_from(sorted(attrs))))
    elif kind == "dim" and target is not None and target.shape:
        shape = list(target.shape)
        shape[draw(st.integers(0, len(shape) - 1))] = draw(st.integers(0, 9))
        specs[i] = TensorSpec(target.dtype, tuple(shape))
    elif kind == "rank" and target is not None:
        shape = draw(st.lists(st.integers(0, 5), max_size=6))
        specs[i] = TensorSpec(target.dtype, tuple(shape))
    elif kind == "dtype" and target is not None:
        specs[i] = TensorSpec(np.dtype(draw(DTYPES)), target.shape)
    elif kind == "inputs":
        change = draw(st.sampled_from(["drop", "none", "extra"]))
        if change == "drop" and specs:
            specs.pop()
        elif change == "none" and specs:
            specs[i] = None
        else:
            specs.append(TensorSpec(np.dtype(np.float32), (2, 3)))
    elif kind == "opset":
        return draw(st.integers(1, 22))
    return None


@st.composite
def mutated_nodes(draw):
    op, shapes, attrs, opset, dtype, consts, _ = draw(st.sampled_from(TEMPLATES))
    consts = CONSTANTS.get(op, ()) if consts is None else consts
    specs = [
        None if s is None else TensorSpec(s.dtype, s.shape) if isinstance(s, np.ndarray)
        else TensorSpec(np.dtype(dtype), s)
        for s in shapes
    ]
    literal = [s if isinstance(s, np.ndarray) else None for s in shapes]
    attrs = dict(attrs)
    for _ in range(draw(st.integers(1, 3))):
        opset = mutate(draw, specs, attrs) or opset
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = []
    for i, s in enumerate(specs):
        lit = literal[i] if i < len(literal) else None
        keep = lit is not None and s == TensorSpec(lit.dtype, lit.shape)
        values.append(lit if keep else random_array(s, rng) if s is not None and i in consts else None)
    return op, opset, specs, values, attrs


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node=mutated_nodes())
def test_mutated_nodes_fail_only_with_model_error(node):
    op, opset, specs, values, attrs = node
    try:
        kernel = resolve("", op, opset, "fuzz")(op, "fuzz", attrs, opset)
    except UnsupportedOpError:
        return
    try:
        out_specs = kernel.prepare(specs, values)
    except ModelError:
        return
    assert all(isinstance(d, int) and d >= 0 for s in out_specs for d in s.shape)
    if sum(s.size for s in out_specs) > 100_000:
        return
    rng = np.random.default_rng(0)
    arrays = [
        v if v is not None or s is None else random_array(s, rng)
        for s, v in zip(specs, values, strict=True)
    ]
    with np.errstate(all="ignore"):
        kernel.run(arrays, [np.empty(s.shape, s.dtype) for s in out_specs])
