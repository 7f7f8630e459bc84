"""nn-family reference kernels: fused activations, and the kernels added for the ONNX
conformance cases checked against onnxruntime (onnx's ReferenceEvaluator for the ops ORT lacks)
on shapes and attributes the conformance cases do not cover. One line per case.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper
from onnx.reference import ReferenceEvaluator

from edgerun.runtime.errors import InputError, ModelError, UnsupportedOpError
from edgerun.runtime.kernels import TensorSpec, resolve


def run_kernel(op, arrays, attrs=None, opset=23, outputs=1, consts=()):
    """resolve -> prepare -> run into NaN-filled outputs; inputs are read-only."""
    for a in arrays:
        if a is not None:
            a.flags.writeable = False
    kernel = resolve("", op, opset, "n")(op, "n", dict(attrs or {}), opset)
    specs = [None if a is None else TensorSpec(a.dtype, a.shape) for a in arrays]
    values = [a if i in consts else None for i, a in enumerate(arrays)]
    out_specs = kernel.prepare(specs, values)[:outputs]
    outs = [np.full(s.shape, np.nan if s.dtype.kind == "f" else 77, s.dtype) for s in out_specs]
    kernel.run(list(arrays), outs)
    return outs


def reference(op, arrays, attrs=None, opset=23, outputs=1, evaluator="ort"):
    """onnxruntime (or onnx's ReferenceEvaluator) on a one-node model."""
    names = ["" if a is None else f"in{i}" for i, a in enumerate(arrays)]
    outs = [f"out{i}" for i in range(outputs)]
    node = helper.make_node(op, names, outs, **(attrs or {}))
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for n, a in zip(names, arrays, strict=True) if a is not None]
    graph = helper.make_graph([node], "g", inputs, [helper.make_value_info(o, helper.TypeProto()) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    feeds = {n: a for n, a in zip(names, arrays, strict=True) if a is not None}
    if evaluator == "onnx":
        return ReferenceEvaluator(model).run(None, feeds)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# --- fused activations -----------------------------------------------------------------------

ACTIVATIONS = [
    ("Relu", [], lambda y: np.maximum(y, 0)),
    ("Clip", [-0.5, 0.75], lambda y: np.clip(y, -0.5, 0.75)),
    ("LeakyRelu", [0.1], lambda y: np.where(y < 0, y * np.float32(0.1), y)),
]


def _fused_inputs(op, rng):
    return {
        "Conv": ([rand(rng, 2, 4, 6, 6), rand(rng, 6, 2, 3, 3), rand(rng, 6)], {"group": 2, "pads": [1, 1, 1, 1]}),
        "ConvTranspose": ([rand(rng, 2, 4, 5, 5), rand(rng, 4, 3, 3, 3), rand(rng, 3)], {"strides": [2, 2]}),
        "Gemm": ([rand(rng, 5, 4), rand(rng, 6, 4), rand(rng, 6)], {"transB": 1, "alpha": 0.5}),
        "MatMul": ([rand(rng, 3, 5, 4), rand(rng, 4, 6)], {}),
    }[op]


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose", "Gemm", "MatMul"])
@pytest.mark.parametrize("activation, params, apply", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_fused_activation_equals_separate_activation(op, activation, params, apply):
    arrays, attrs = _fused_inputs(op, np.random.default_rng(0))
    plain = run_kernel(op, arrays, attrs)[0]
    fused = run_kernel(op, arrays, {**attrs, "activation": activation, "activation_params": params})[0]
    np.testing.assert_array_equal(fused, apply(plain))


def test_unknown_fused_activation_is_refused():
    arrays, attrs = _fused_inputs("Gemm", np.random.default_rng(0))
    with pytest.raises(ModelError, match="unknown fused activation"):
        run_kernel("Gemm", arrays, {**attrs, "activation": "Gelu"})


# --- against the ONNX reference evaluator ----------------------------------------------------

R = np.random.default_rng(1)
CASES = [  # op, inputs, attrs, opset, outputs[, oracle]
    ("ConvTranspose", [rand(R, 1, 4, 4, 5), rand(R, 4, 2, 3, 2)], {"group": 2, "dilations": [2, 1]}, 11, 1),
    ("ConvTranspose", [rand(R, 2, 2, 3, 3), rand(R, 2, 3, 3, 3), rand(R, 3)],
     {"strides": [3, 2], "output_padding": [1, 1], "pads": [1, 0, 0, 1]}, 11, 1),
    ("ConvTranspose", [rand(R, 1, 1, 7), rand(R, 1, 2, 4)], {"strides": [2], "auto_pad": "SAME_LOWER"}, 11, 1),
    ("ConvTranspose", [rand(R, 1, 2, 2, 3, 2), rand(R, 2, 1, 2, 2, 2)],
     {"output_shape": [4, 7, 3], "strides": [2, 3, 2]}, 11, 1),
    ("LayerNormalization", [rand(R, 2, 3, 4), rand(R, 3, 4), rand(R, 3, 4)], {"axis": 1}, 17, 3),
    ("GroupNormalization", [rand(R, 2, 6, 3), rand(R, 6), rand(R, 6)], {"num_groups": 3}, 21, 1),
    ("InstanceNormalization", [rand(R, 2, 3, 4, 2), rand(R, 3), rand(R, 3)], {"epsilon": 0.01}, 6, 1),
    ("LpNormalization", [rand(R, 3, 4)], {"axis": 0, "p": 1}, 1, 1),
    ("LpPool", [rand(R, 1, 2, 5, 5)], {"kernel_shape": [2, 3], "strides": [2, 1], "p": 3, "pads": [1, 1, 0, 1]}, 18, 1),
    ("GlobalLpPool", [rand(R, 2, 3, 4)], {"p": 3}, 2, 1),
    ("RNN", [rand(R, 4, 3, 2), rand(R, 2, 5, 2), rand(R, 2, 5, 5), rand(R, 2, 10),
             np.array([4, 2, 3], np.int32), rand(R, 2, 3, 5)],
     {"hidden_size": 5, "direction": "bidirectional", "activations": ["Relu", "Tanh"]}, 14, 2),
    ("GRU", [rand(R, 3, 2, 4), rand(R, 1, 9, 4), rand(R, 1, 9, 3), rand(R, 1, 18)],
     {"hidden_size": 3, "linear_before_reset": 1, "direction": "reverse"}, 14, 2),
    ("GRU", [rand(R, 2, 3, 4), rand(R, 1, 9, 4), rand(R, 1, 9, 3)], {"hidden_size": 3, "layout": 1}, 14, 2, "onnx"),
    ("LSTM", [rand(R, 3, 2, 4), rand(R, 2, 12, 4), rand(R, 2, 12, 3), rand(R, 2, 24), None, None, None,
              rand(R, 2, 9)], {"hidden_size": 3, "direction": "bidirectional", "clip": 0.5}, 14, 3),
    ("NegativeLogLikelihoodLoss", [rand(R, 3, 4, 2), np.array([[0, 3], [1, 1], [2, -1]]), rand(R, 4)],
     {"ignore_index": -1}, 13, 1),
    ("SoftmaxCrossEntropyLoss", [rand(R, 3, 5), np.array([4, 0, 2]), rand(R, 5)], {"reduction": "sum"}, 13, 2),
    ("Attention", [rand(R, 2, 3, 8), rand(R, 2, 5, 4), rand(R, 2, 5, 4), rand(R, 3, 5)],
     {"q_num_heads": 4, "kv_num_heads": 2, "is_causal": 1}, 23, 1, "onnx"),
    ("RotaryEmbedding", [rand(R, 2, 3, 12), rand(R, 5, 2), rand(R, 5, 2), np.array([[0, 4, 2], [1, 1, 3]])],
     {"num_heads": 2, "rotary_embedding_dim": 4, "interleaved": 1}, 23, 1, "onnx"),
    ("LinearAttention", [rand(R, 2, 3, 8), rand(R, 2, 3, 4), rand(R, 2, 3, 6), rand(R, 2, 1, 4, 6),
                         rand(R, 2, 3, 4) * 0.1, np.abs(rand(R, 2, 3, 1))],
     {"q_num_heads": 2, "kv_num_heads": 1}, 27, 2, "onnx"),
    ("CausalConvWithState", [rand(R, 2, 3, 2), rand(R, 3, 1, 4), rand(R, 3)], {"activation": "swish"}, 27, 2, "onnx"),
    ("RoiAlign", [rand(R, 2, 3, 6, 5), np.array([[0, 0.5, 4, 3.2], [1, 1, 2, 5]], np.float32), np.array([1, 0])],
     {"output_height": 3, "output_width": 2, "mode": "max", "spatial_scale": 0.8}, 16, 1),
    ("DeformConv", [rand(R, 2, 4, 5, 5), rand(R, 4, 2, 2, 3), rand(R, 2, 24, 4, 2), rand(R, 4),
                    rand(R, 2, 12, 4, 2)], {"group": 2, "offset_group": 2, "pads": [0, 0, 0, 1], "strides": [1, 2]},
     19, 1, "onnx"),
    ("QuantizeLinear", [rand(R, 2, 3), np.array([0.1, 0.2, 0.05], np.float32), np.array([1, -2, 3], np.int8)],
     {"axis": 1}, 13, 1),
    ("MatMulInteger", [np.array([[1, 200], [30, 4]], np.uint8), np.array([[-5, 6], [7, -128]], np.int8),
                       np.array(3, np.uint8), np.array(-1, np.int8)], {}, 10, 1),
]


# a 6th field "onnx" uses onnx's ReferenceEvaluator where onnxruntime lacks the op or attribute
CASES = [c if len(c) == 6 else (*c, "ort") for c in CASES]


@pytest.mark.parametrize("op, arrays, attrs, opset, outputs, oracle", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_reference(op, arrays, attrs, opset, outputs, oracle):
    expected = reference(op, arrays, attrs, opset, outputs, oracle)
    for ours, ref in zip(run_kernel(op, arrays, attrs, opset, outputs), expected, strict=True):
        assert ours.shape == ref.shape and ours.dtype == ref.dtype
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


# --- semantics the reference does not pin down -----------------------------------------------

def test_batchnorm_training_mode_updates_running_statistics():
    rng = np.random.default_rng(2)
    x, scale, bias, mean, var = rand(rng, 4, 3, 5), rand(rng, 3), rand(rng, 3), rand(rng, 3), rand(rng, 3) ** 2
    y, new_mean, new_var = run_kernel("BatchNormalization", [x, scale, bias, mean, var],
                                      {"training_mode": 1, "momentum": 0.8}, 15, 3)
    batch_mean, batch_var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    np.testing.assert_allclose(new_mean, mean * 0.8 + batch_mean * 0.2, rtol=1e-5)
    np.testing.assert_allclose(new_var, var * 0.8 + batch_var * 0.2, rtol=1e-5)
    want = (x - batch_mean[:, None]) / np.sqrt(batch_var[:, None] + 1e-5) * scale[:, None] + bias[:, None]
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


def test_dropout_training_with_zero_ratio_is_identity_and_seeded_masks_repeat():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    args = [x, np.array(0.0, np.float32), np.array(True)]
    y, mask = run_kernel("Dropout", args, {}, 13, 2)
    np.testing.assert_array_equal(y, x)
    assert mask.all()
    args[1] = np.array(0.5, np.float32)
    first, second = (run_kernel("Dropout", args, {"seed": 3}, 13, 2) for _ in range(2))
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(first[0], x * first[1] * 2)


def test_maxunpool_with_larger_output_shape_keeps_the_unpooled_corner():
    x, indices = np.array([[[[5.0, 6.0]]]], np.float32), np.array([[[[1, 3]]]])
    y = run_kernel("MaxUnpool", [x, indices, np.array([1, 1, 2, 5])], {"kernel_shape": [1, 2], "strides": [1, 2]},
                   11, consts=(2,))[0]
    np.testing.assert_array_equal(y, [[[[0, 5, 0, 6, 0], [0, 0, 0, 0, 0]]]])


def test_matmulinteger_zero_points_per_row_of_a_and_column_of_b():
    a, b = np.array([[1, 200], [30, 4]], np.uint8), np.array([[-5, 6], [7, -128]], np.int8)
    a_zero, b_zero = np.array([3, 9], np.uint8), np.array([1, -1], np.int8)
    y = run_kernel("MatMulInteger", [a, b, a_zero, b_zero], {}, 10)[0]
    want = (a.astype(np.int64) - a_zero[:, None]) @ (b.astype(np.int64) - b_zero[None, :])
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("op, arrays, attrs, opset, error", [
    ("NegativeLogLikelihoodLoss", [np.zeros((2, 3), np.float32), np.array([0, 3])], {}, 13, "out of range"),
    ("RNN", [np.zeros((2, 1, 1), np.float32), np.zeros((1, 1, 1), np.float32), np.zeros((1, 1, 1), np.float32),
             None, np.array([3], np.int32)], {"hidden_size": 1}, 14, "sequence_lens"),
    ("MaxUnpool", [np.zeros((1, 1, 1, 2), np.float32), np.array([[[[0, 9]]]])], {"kernel_shape": [1, 2]}, 11,
     "out of range"),
])
def test_bad_data_raises_input_error(op, arrays, attrs, opset, error):
    with pytest.raises(InputError, match=error):
        run_kernel(op, arrays, attrs, opset)


@pytest.mark.parametrize("op, arrays, attrs, opset, error", [
    ("ConvTranspose", [np.zeros((1, 2, 3, 3), np.float32), np.zeros((3, 1, 2, 2), np.float32)], {}, 11, "does not fit"),
    ("LSTM", [np.zeros((2, 1, 3), np.float32), np.zeros((1, 6, 3), np.float32), np.zeros((1, 6, 2), np.float32)],
     {"hidden_size": 2}, 14, "must be"),
    ("GRU", [np.zeros((2, 1, 3), np.float32), np.zeros((1, 6, 3), np.float32), np.zeros((1, 6, 2), np.float32)],
     {"hidden_size": 2, "activations": ["Gelu", "Tanh"]}, 14, "activation"),
    ("QuantizeLinear", [np.zeros((2, 3), np.float32), np.ones(2, np.float32)], {"axis": 1}, 13, "scale shape"),
    ("GroupNormalization", [np.zeros((1, 4, 2), np.float32), np.ones(4, np.float32), np.ones(4, np.float32)],
     {"num_groups": 3}, 21, "num_groups"),
    ("Attention", [np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 2, 5, 3), np.float32),
                   np.zeros((1, 2, 5, 3), np.float32)], {}, 23, "do not fit"),
])
def test_invalid_nodes_raise_model_error(op, arrays, attrs, opset, error):
    with pytest.raises(ModelError, match=error):
        run_kernel(op, arrays, attrs, opset)


# --- fuzzing: mutated nodes of the kernels above fail only with ModelError (InputError for data) ---

F32, I64 = np.dtype(np.float32), np.dtype(np.int64)
FUZZ_TEMPLATES = [  # op, input specs, attrs, opset
    ("ConvTranspose", [((1, 2, 3, 3), F32), ((2, 2, 2, 2), F32), ((2,), F32)], {"strides": [2, 1]}, 11),
    ("ConvInteger", [((1, 2, 4), np.dtype(np.uint8)), ((3, 2, 2), np.dtype(np.uint8))], {}, 10),
    ("LayerNormalization", [((2, 3, 4), F32), ((4,), F32), ((4,), F32)], {}, 17),
    ("RMSNormalization", [((2, 3, 4), F32), ((4,), F32)], {"axis": 1}, 23),
    ("GroupNormalization", [((2, 4, 3), F32), ((4,), F32), ((4,), F32)], {"num_groups": 2}, 21),
    ("InstanceNormalization", [((2, 3, 4), F32), ((3,), F32), ((3,), F32)], {}, 6),
    ("LRN", [((1, 4, 3, 3), F32)], {"size": 3}, 13),
    ("LpNormalization", [((3, 4), F32)], {"p": 1}, 1),
    ("MeanVarianceNormalization", [((2, 3, 2, 2), F32)], {}, 13),
    ("LpPool", [((1, 2, 4, 4), F32)], {"kernel_shape": [2, 2]}, 18),
    ("GlobalLpPool", [((1, 2, 4), F32)], {}, 2),
    ("MaxUnpool", [((1, 1, 2, 2), F32), ((1, 1, 2, 2), I64)], {"kernel_shape": [2, 2], "strides": [2, 2]}, 11),
    ("BatchNormalization", [((2, 3, 4), F32)] + [((3,), F32)] * 4, {"training_mode": 1}, 15),
    ("Dropout", [((2, 3), F32), ((), F32), ((), np.dtype(bool))], {"seed": 1}, 13),
    ("RNN", [((3, 2, 4), F32), ((1, 5, 4), F32), ((1, 5, 5), F32)], {"hidden_size": 5}, 14),
    ("GRU", [((3, 2, 4), F32), ((2, 15, 4), F32), ((2, 15, 5), F32)],
     {"hidden_size": 5, "direction": "bidirectional"}, 14),
    ("LSTM", [((3, 2, 4), F32), ((1, 20, 4), F32), ((1, 20, 5), F32)], {"hidden_size": 5, "layout": 0}, 14),
    ("NegativeLogLikelihoodLoss", [((3, 4), F32), ((3,), I64)], {"reduction": "sum"}, 13),
    ("SoftmaxCrossEntropyLoss", [((3, 4, 2), F32), ((3, 2), I64), ((4,), F32)], {"ignore_index": 1}, 13),
    ("QuantizeLinear", [((2, 3), F32), ((3,), F32), ((3,), np.dtype(np.int8))], {"axis": 1}, 13),
    ("DequantizeLinear", [((2, 4), np.dtype(np.uint8)), ((2, 2), F32)], {"axis": 1, "block_size": 2}, 21),
    ("DynamicQuantizeLinear", [((2, 3), F32)], {}, 11),
    ("MatMulInteger", [((2, 3), np.dtype(np.int8)), ((3, 4), np.dtype(np.int8))], {}, 10),
    ("QLinearMatMul", [((2, 3), np.dtype(np.uint8)), ((), F32), ((), np.dtype(np.uint8))] * 2
     + [((), F32), ((), np.dtype(np.uint8))], {}, 21),
    ("Attention", [((1, 2, 3, 4), F32), ((1, 2, 5, 4), F32), ((1, 2, 5, 4), F32)], {"is_causal": 1}, 23),
    ("Attention", [((2, 3, 8), F32), ((2, 4, 4), F32), ((2, 4, 4), F32), ((3, 2), np.dtype(bool)),
                   ((2, 1, 2, 2), F32), ((2, 1, 2, 2), F32)], {"q_num_heads": 2, "kv_num_heads": 1}, 23),
    ("RotaryEmbedding", [((1, 3, 8), F32), ((4, 2), F32), ((4, 2), F32), ((1, 3), I64)], {"num_heads": 2}, 23),
    ("LinearAttention", [((1, 3, 8), F32)] * 3 + [((1, 2, 4, 4), F32), ((1, 3, 2), F32), ((1, 3, 1), F32)],
     {"q_num_heads": 2, "kv_num_heads": 2}, 27),
    ("CausalConvWithState", [((2, 3, 5), F32), ((3, 1, 3), F32), ((3,), F32), ((2, 3, 2), F32)],
     {"activation": "silu"}, 27),
    ("DeformConv", [((1, 2, 4, 4), F32), ((2, 2, 2, 2), F32), ((1, 8, 3, 3), F32), ((2,), F32), ((1, 4, 3, 3), F32)],
     {}, 19),
    ("RoiAlign", [((1, 2, 5, 5), F32), ((2, 4), F32), ((2,), I64)], {"output_height": 2, "sampling_ratio": 2}, 16),
]
FUZZ_KEYS = st.sampled_from([
    "axis", "p", "size", "num_groups", "hidden_size", "direction", "layout", "activations", "clip",
    "linear_before_reset", "reduction", "ignore_index", "block_size", "output_dtype", "output_shape",
    "output_padding", "strides", "pads", "group", "auto_pad", "kernel_shape", "q_num_heads", "kv_num_heads",
    "scale", "softcap", "qk_matmul_output_mode", "softmax_precision", "epsilon", "training_mode",
    "num_heads", "rotary_embedding_dim", "interleaved", "update_rule", "activation", "offset_group",
    "output_height", "output_width", "sampling_ratio", "spatial_scale", "mode", "coordinate_transformation_mode",
])
FUZZ_VALUES = st.one_of(
    st.integers(-3, 8), st.sampled_from([2**31, -(2**40), True]), st.lists(st.integers(-2, 6), max_size=5),
    st.sampled_from(["forward", "reverse", "bidirectional", "mean", "none", "bogus", "SAME_UPPER", b"\xff"]),
    st.lists(st.sampled_from(["Tanh", "Relu", "Sigmoid", "Gelu"]), max_size=4), st.floats(), st.none(),
)


def _fuzz_array(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    if spec.dtype.kind == "f":
        return rng.standard_normal(spec.shape).astype(spec.dtype)
    return rng.integers(-2, 5, spec.shape).astype(spec.dtype)


@st.composite
def fuzzed_nodes(draw):
    op, shapes, attrs, opset = draw(st.sampled_from(FUZZ_TEMPLATES))
    specs = [TensorSpec(np.dtype(d), s) for s, d in shapes]
    attrs = dict(attrs)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["attr", "attr", "drop", "dim", "dtype", "none", "opset"]))
        i = draw(st.integers(0, len(specs) - 1))
        if kind == "attr":
            attrs[draw(FUZZ_KEYS)] = draw(FUZZ_VALUES)
        elif kind == "drop" and attrs:
            attrs.pop(draw(st.sampled_from(sorted(attrs))))
        elif kind == "dim" and specs[i] is not None and specs[i].shape:
            shape = list(specs[i].shape)
            shape[draw(st.integers(0, len(shape) - 1))] = draw(st.integers(0, 6))
            specs[i] = TensorSpec(specs[i].dtype, tuple(shape))
        elif kind == "dtype" and specs[i] is not None:
            dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int8, np.uint8, bool]))
            specs[i] = TensorSpec(np.dtype(dtype), specs[i].shape)
        elif kind == "none" and i > 0:
            specs[i] = None
        elif kind == "opset":
            opset = draw(st.integers(1, 27))
    return op, opset, specs, attrs, draw(st.integers(0, 2**16))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node=fuzzed_nodes())
def test_fuzzed_nodes_fail_only_with_model_or_input_error(node):
    op, opset, specs, attrs, seed = node
    try:
        kernel = resolve("", op, opset, "fuzz")(op, "fuzz", attrs, opset)
    except UnsupportedOpError:
        return
    rng = np.random.default_rng(seed)
    arrays = [None if s is None else _fuzz_array(s, rng) for s in specs]
    try:
        out_specs = kernel.prepare(specs, list(arrays))
    except ModelError:
        return
    assert all(isinstance(d, int) and d >= 0 for s in out_specs for d in s.shape)
    if sum(s.size for s in out_specs) > 100_000:
        return
    with np.errstate(all="ignore"):
        try:
            kernel.run(arrays, [np.empty(s.shape, s.dtype) for s in out_specs])
        except InputError:
            pass
