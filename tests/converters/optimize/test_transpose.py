"""sink_transposes: NHWC graphs whose NCHW kernels are wrapped as Transpose -> Conv -> Transpose
(the TFLite importer's and tf2onnx's pattern) lose the inner Transposes. optimize_and_check
compares edgerun's outputs before and after with onnxruntime's on the original model; each
test counts the Transposes left."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgerun.converters.optimize import DEFAULT_PASSES
from edgerun.converters.optimize.transpose import SinkTransposes
from edgerun.runtime import Interpreter
from edgerun.runtime.graph import GraphBuilder
from tests.converters.optimize.helpers import convert, info, ops, optimize_and_check, random_feeds, run
from tests.onnx_models import make_cnn, make_model

node = helper.make_node
TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]
X_SHAPE = [2, 6, 5, 4]  # NHWC


class Net:
    """An ONNX graph written op by op; `conv` wraps an NCHW Conv in NHWC Transposes."""

    def __init__(self, seed: int = 0) -> None:
        self.nodes: list = []
        self.inits: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(seed)

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, **attrs) -> str | list[str]:
        names = [f"{op_type.lower()}{len(self.nodes)}_{i}" for i in range(outputs)]
        self.nodes.append(node(op_type, inputs, names, **attrs))
        return names[0] if outputs == 1 else names

    def const(self, array, name: str = "c") -> str:
        name = f"{name}{len(self.inits)}"
        self.inits[name] = np.asarray(array)
        return name

    def conv(self, x: str, cin: int = 4, cout: int = 4, kernel: int = 3, group: int = 1) -> str:
        w = self.const((self.rng.standard_normal((cout, cin // group, kernel, kernel)) / 3).astype(np.float32), "w")
        b = self.const(self.rng.standard_normal(cout).astype(np.float32), "b")
        h = self.op("Conv", [self.op("Transpose", [x], perm=TO_NCHW), w, b], pads=[kernel // 2] * 4, group=group)
        return self.op("Transpose", [h], perm=TO_NHWC)

    def model(self, outputs: list[str], inputs: dict[str, list[int]] | None = None, opset: int = 17):
        inputs = {"x": X_SHAPE} if inputs is None else inputs
        return make_model(self.nodes, [info(n, s) for n, s in inputs.items()], [info(o, None) for o in outputs],
                          self.inits, opset=opset)


def transposes(graph) -> int:
    return ops(graph).count("Transpose")


def sink(model, **kwargs):
    """The converted model after sink_transposes alone, checked against onnxruntime."""
    graph, report = optimize_and_check(model, passes=[SinkTransposes()], **kwargs)
    assert report.passes[0].name == "sink_transposes"
    return graph, report


def test_nhwc_conv_chain_keeps_one_transpose_at_each_end():
    net = Net()
    y = net.conv(net.op("Relu", [net.conv("x")]))
    graph, report = sink(net.model([y]))
    assert ops(graph) == ["Transpose", "Conv", "Relu", "Conv", "Transpose"]
    assert report.passes[0].changes == {"Transpose removed": 2}
    assert graph.outputs[0].name == y


def test_residual_add_of_two_transposed_branches():
    net = Net()
    y = net.op("Add", [net.conv("x"), net.conv("x", kernel=1)])
    graph, _ = sink(net.model([y]))
    assert transposes(graph) == 2  # one for x (the two are merged), one for y
    assert ops(graph).count("Add") == 1 and ops(graph)[-1] == "Transpose"


def test_residual_with_the_graph_input_as_shortcut():
    net = Net()
    y = net.op("Add", [net.conv(net.op("Relu", [net.conv("x")])), "x"])
    graph, _ = sink(net.model([y]))
    assert ops(graph) == ["Transpose", "Conv", "Relu", "Conv", "Add", "Transpose"]


def test_concat_on_channels_of_two_transposed_convs():
    net = Net()
    y = net.conv(net.op("Concat", [net.conv("x", cout=3), net.conv("x", cout=5)], axis=3), cin=8)
    graph, _ = sink(net.model([y]))
    assert transposes(graph) == 2
    (concat,) = [n for n in graph.nodes if n.op_type == "Concat"]
    assert concat.attrs["axis"] == 1


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("keepdims", [1, 0])
def test_mean_over_height_and_width(keepdims, opset):
    net = Net()
    axes = {"axes": [1, 2]} if opset < 18 else {}
    inputs = [net.conv("x")] + ([net.const(np.array([1, -2], np.int64), "axes")] if opset >= 18 else [])
    y = net.op("ReduceMean", inputs, keepdims=keepdims, **axes)
    graph, _ = sink(net.model([y], opset=opset))
    assert transposes(graph) == (2 if keepdims else 1)  # (N, C) needs no Transpose


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_between_convs(mode):
    net = Net()
    pads = net.const(np.array([0, 1, 2, 0, 0, 2, 1, 0], np.int64), "pads")
    y = net.conv(net.op("Pad", [net.conv("x"), pads], mode=mode))
    graph, _ = sink(net.model([y]))
    assert ops(graph) == ["Transpose", "Conv", "Pad", "Conv", "Transpose"]


@pytest.mark.parametrize("shape", [(4,), (1, 1, 1, 4), (1, 6, 5, 4), (5, 4), (1,), ()])
@pytest.mark.parametrize("op", ["Add", "Mul", "Sub", "Div", "Max", "PRelu"])
def test_elementwise_with_a_constant_between_convs(op, shape):
    net = Net()
    c = net.const((net.rng.standard_normal(shape) + 3).astype(np.float32))
    h = net.conv("x")
    y = net.conv(net.op(op, [c, h] if op not in ("PRelu", "Div") else [h, c]))
    graph, _ = sink(net.model([y]))
    assert transposes(graph) == 2


def test_where_with_constant_condition_and_values():
    net = Net()
    cond = net.const(net.rng.standard_normal((5, 4)) > 0)
    y = net.conv(net.op("Where", [cond, net.conv("x"), net.const(np.float32(0.5))]))
    graph, _ = sink(net.model([y]))
    assert transposes(graph) == 2


def test_one_reader_that_cannot_take_the_transpose():
    """h feeds a Reshape (not layout-agnostic) and a Relu -> conv: the Relu reads the Conv's
    NCHW output instead, and only the Reshape keeps a Transpose."""
    net = Net()
    h = net.conv("x")
    y1 = net.op("Reshape", [h, net.const(np.array([2, -1], np.int64), "shape")])
    y2 = net.conv(net.op("Relu", [h]))
    graph, _ = sink(net.model([y1, y2]))
    assert transposes(graph) == 3
    assert ops(graph).count("Reshape") == 1


def test_graph_output_that_is_a_transposed_value():
    net = Net()
    h = net.conv("x")
    y2 = net.conv(net.op("Relu", [h]))
    graph, _ = sink(net.model([h, y2]))
    assert transposes(graph) == 3
    assert [v.name for v in graph.outputs] == [h, y2]


def test_output_made_by_the_op_a_transpose_moves_past():
    net = Net()
    y = net.op("Relu", [net.conv("x")])
    graph, _ = sink(net.model([y]))
    assert ops(graph) == ["Transpose", "Conv", "Relu", "Transpose"]
    assert graph.outputs[0].name == y and graph.nodes[-1].outputs[0] is graph.outputs[0]


def test_outputs_keep_their_values_by_object():
    net = Net()
    h = net.conv("x")
    y = net.op("Sigmoid", [net.op("Relu", [h])])
    graph = convert(net.model([h, y]))
    feeds = random_feeds(graph)
    want, outputs = run(graph, feeds), list(graph.outputs)
    SinkTransposes().run(graph)
    assert graph.outputs == outputs and all(a is b for a, b in zip(graph.outputs, outputs, strict=True))
    got = run(graph, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6)


def test_a_perm_that_is_not_a_layout_perm():
    """(1, 0, 2) on a rank-3 tensor: through Sigmoid, Add of a (5,) constant, Softmax over
    axis 0 and a keepdims=0 ReduceSum, to one Transpose (1, 0) at the end."""
    net = Net()
    t = net.op("Transpose", ["x"], perm=[1, 0, 2])
    a = net.op("Add", [net.op("Sigmoid", [t]), net.const(np.arange(5, dtype=np.float32))])
    y = net.op("ReduceSum", [net.op("Softmax", [a], axis=0), net.const(np.array([2], np.int64), "axes")],
               keepdims=0)
    graph, _ = sink(net.model([y], {"x": [3, 4, 5]}))
    assert ops(graph) == ["Sigmoid", "Add", "Softmax", "ReduceSum", "Transpose"]
    assert graph.nodes[-1].attrs["perm"] == [1, 0]
    assert graph.nodes[2].attrs["axis"] == 1


def test_inverse_non_layout_perms_cancel():
    net = Net()
    t = net.op("Transpose", ["x"], perm=[1, 0, 2])
    y = net.op("Transpose", [net.op("Exp", [net.op("Neg", [t])])], perm=[1, 0, 2])
    graph, _ = sink(net.model([y], {"x": [3, 4, 5]}))
    assert ops(graph) == ["Neg", "Exp"]


def test_consecutive_transposes_merge():
    net = Net()
    t = net.op("Transpose", ["x"], perm=[0, 2, 3, 1])
    y = net.op("Transpose", [net.op("Transpose", [t], perm=[0, 2, 3, 1])], perm=[1, 0, 2, 3])
    graph, _ = sink(net.model([y]))
    assert ops(graph) == ["Transpose"]
    assert graph.nodes[0].attrs["perm"] == [3, 0, 1, 2]


def test_transpose_and_its_inverse_as_the_whole_graph():
    net = Net()
    y = net.op("Transpose", [net.op("Transpose", ["x"], perm=TO_NCHW)], perm=TO_NHWC)
    graph, _ = sink(net.model([y]))
    assert ops(graph) == ["Identity"]  # input and output both pinned: remove_identity decides


def test_split_slice_and_clip_between_convs():
    net = Net()
    halves = net.op("Split", [net.conv("x")], outputs=2, axis=3)
    clipped = net.op("Clip", [halves[0], net.const(np.float32(0), "lo"), net.const(np.float32(0.5), "hi")])
    joined = net.op("Concat", [clipped, net.op("HardSigmoid", [halves[1]])], axis=-1)
    cut = net.op("Slice", [joined, *(net.const(np.array(v, np.int64)) for v in ([1], [4], [-3]))])
    y = net.conv(cut)
    graph, _ = sink(net.model([y]))
    assert transposes(graph) == 2


def test_slice_without_axes():
    net = Net()
    cut = net.op("Slice", [net.conv("x"), net.const(np.array([0, 1], np.int64)), net.const(np.array([2, 5]))])
    graph, _ = sink(net.model([net.conv(cut)]))
    assert transposes(graph) == 2


def test_per_tensor_quantization_moves():
    net = Net()
    scale, zero = net.const(np.float32(0.05), "scale"), net.const(np.uint8(128), "zero")
    t = net.op("Transpose", ["x"], perm=TO_NHWC)
    q = net.op("DequantizeLinear", [net.op("QuantizeLinear", [t, scale, zero]), scale, zero])
    y = net.op("Transpose", [q], perm=TO_NCHW)
    graph, _ = sink(net.model([y], {"x": [1, 4, 3, 3]}))
    assert ops(graph) == ["QuantizeLinear", "DequantizeLinear"]


def test_mobilenet_like_block_runs_in_nchw_and_then_fuses():
    """conv, relu6, depthwise conv, squeeze-excite (mean, 1x1 convs, hard sigmoid, mul),
    projection and a residual add; then the default passes fuse the Add and activations."""
    net = Net(3)
    h = net.op("Clip", [net.conv("x"), net.const(np.float32(0), "lo"), net.const(np.float32(6), "hi")])
    d = net.op("Relu", [net.conv(h, kernel=3, group=4)])
    s = net.op("ReduceMean", [d], axes=[1, 2], keepdims=1)
    s = net.op("HardSigmoid", [net.conv(net.op("Relu", [net.conv(s, cout=2, kernel=1)]), cin=2, kernel=1)])
    y = net.op("Add", [net.conv(net.op("Mul", [d, s]), kernel=1), h])
    graph, _ = sink(net.model([y]))
    assert transposes(graph) == 2 and ops(graph)[0] == ops(graph)[-1] == "Transpose"
    graph, _ = optimize_and_check(net.model([y]), passes=[SinkTransposes(), *DEFAULT_PASSES])
    assert transposes(graph) == 2 and "FusedConv" in ops(graph) and "Clip" not in ops(graph)


def test_never_more_transposes_when_readers_do_not_meet_an_inverse():
    net = Net()
    t = net.op("Transpose", ["x"], perm=TO_NCHW)
    graph, report = sink(net.model([net.op("Sigmoid", [t]), net.op("Tanh", [t])]))
    assert ops(graph) == ["Transpose", "Sigmoid", "Tanh"]
    assert report.passes[0].changes == {}


def test_a_value_read_in_a_nested_graph_stays():
    """h is read inside If branches (by name) and by a Relu -> conv: the Relu reads the Conv's
    output directly, h and its Transpose stay for the branches."""
    net = Net()
    h = net.conv("x")
    branch = helper.make_graph([node("Relu", [h], ["r"])], "then", [], [info("r", None)])
    other = helper.make_graph([node("Neg", [h], ["n"])], "else", [], [info("n", None)])
    y1 = net.op("If", [net.const(np.array(True), "cond")], then_branch=branch, else_branch=other)
    y2 = net.conv(net.op("Relu", [h]))
    graph, _ = sink(net.model([y1, y2]))
    assert transposes(graph) == 3
    (if_node,) = [n for n in graph.nodes if n.op_type == "If"]
    assert if_node.attrs["then_branch"].nodes[0].inputs[0].name == h


def test_plain_nchw_graph_is_left_alone():
    graph, report = optimize_and_check(make_cnn(), passes=[SinkTransposes()])
    assert ops(graph) == ops(convert(make_cnn()))
    assert report.passes[0].changes == {}


def test_second_run_changes_nothing():
    net = Net()
    graph = convert(net.model([net.conv(net.op("Relu", [net.conv("x")]))]))
    assert SinkTransposes().run(graph) and SinkTransposes().run(graph) == {}


def test_signature_outputs_built_with_graph_builder():
    """A graph as the TFLite importer builds it (GraphBuilder, opset 21), with a second
    signature whose output is an inner transposed value: it stays that value."""
    rng = np.random.default_rng(5)
    b = GraphBuilder()
    x = b.input("x", np.float32, X_SHAPE)
    w = b.constant("w", (rng.standard_normal((4, 4, 1, 1)) / 2).astype(np.float32))
    h = b.op("Transpose", [b.op("Conv", [b.op("Transpose", [x], perm=TO_NCHW), w])], perm=TO_NHWC)
    r = b.op("Relu", [h])
    y = b.output(b.op("Transpose", [b.op("Conv", [b.op("Transpose", [r], perm=TO_NCHW), w])], perm=TO_NHWC), "y")
    b.signature("serving_default", {"x": x}, {"y": y})
    b.signature("features", {"x": x}, {"h": h})
    graph = b.build()
    feed = rng.standard_normal(X_SHAPE).astype(np.float32)
    want = {sig: Interpreter(graph).run({"x": feed}, signature=sig) for sig in ("serving_default", "features")}
    conv = lambda a: np.einsum("nhwc,oc->nhwo", a, w.data[:, :, 0, 0])  # noqa: E731 - 1x1 conv in NHWC
    np.testing.assert_allclose(want["serving_default"]["y"], conv(np.maximum(conv(feed), 0)), rtol=1e-5, atol=1e-6)
    SinkTransposes().run(graph)
    assert transposes(graph) == 3 and graph.signatures["features"].outputs["h"] is h
    for sig, outputs in want.items():
        got = Interpreter(graph).run({"x": feed}, signature=sig)
        for name, array in outputs.items():
            np.testing.assert_allclose(got[name], array, rtol=1e-6, atol=1e-6)
