"""The numba backend's fast paths agree with onnxruntime, and fall back to the
reference kernels where they do not apply."""

from __future__ import annotations

import numba
import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper

import edgerun.devices.numba_conv as numba_conv
import edgerun.devices.numba_spatial as numba_spatial
from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter
from tests.onnx_models import make_mlp, make_model, ort_run

F32 = TensorProto.FLOAT


def run_both(model, feeds, device="numba", oracle=None, atol=1e-6):
    """Run on `device` and compare with onnxruntime on `oracle` (model, feeds), by default the
    same ones; returns the plan's step function names."""
    it = Interpreter(from_onnx(model), device=device)
    ours = it.run(feeds)
    theirs = ort_run(*(oracle or (model, feeds)))
    for name, want in theirs.items():
        np.testing.assert_allclose(ours[name], want, rtol=1e-5, atol=atol)
    return [step[0].__name__ for step in it._plans["serving_default"].prepared.steps]


def gemm_model(m, k, n, *, trans_a=0, trans_b=0, alpha=1.0, beta=1.0, c_shape=(None,), const_b=True):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a_shape = (k, m) if trans_a else (m, k)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    inits, inputs = {}, [helper.make_tensor_value_info("a", F32, a_shape)]
    if const_b:
        inits["b"] = b
    else:
        inputs.append(helper.make_tensor_value_info("b", F32, b.shape))
    names = ["a", "b"]
    if c_shape != (None,):
        inits["c"] = rng.standard_normal(c_shape).astype(np.float32)
        names.append("c")
    node = helper.make_node("Gemm", names, ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    model = make_model([node], inputs, [helper.make_tensor_value_info("y", F32, None)], inits)
    feeds = {"a": rng.standard_normal(a_shape).astype(np.float32)}
    if not const_b:
        feeds["b"] = b
    return model, feeds


@pytest.mark.parametrize("kwargs", [
    dict(m=1, k=64, n=32, trans_b=1, c_shape=(32,)),
    dict(m=3, k=8, n=5, c_shape=(3, 5)),
    dict(m=4, k=6, n=2, trans_a=1, alpha=0.5, beta=2.0, c_shape=(1, 2)),
    dict(m=2, k=3, n=4, c_shape=()),
    dict(m=5, k=7, n=3, trans_a=1, trans_b=1),
    dict(m=2, k=5, n=3, beta=0.0, c_shape=(3,)),
])
def test_small_gemm_takes_the_fast_path(kwargs):
    assert run_both(*gemm_model(**kwargs)) == ["_run_small"]


@pytest.mark.parametrize("kwargs", [
    dict(m=1, k=1024, n=1000, trans_b=1, c_shape=(1000,)),            # a batch-1 classifier
    dict(m=1, k=576, n=1003, trans_b=1, c_shape=(1003,)),             # columns not a multiple of 4 or 16
    dict(m=3, k=300, n=250, trans_b=1, alpha=0.5, beta=2.0, c_shape=(3, 250)),
    dict(m=4, k=129, n=517, trans_a=1, c_shape=(1, 517)),             # B (K, N): rows of B added
    dict(m=2, k=257, n=130, trans_a=1, trans_b=1, c_shape=()),
    dict(m=1, k=700, n=90, beta=0.0, c_shape=(90,)),
    dict(m=2, k=400, n=300),
])
def test_few_row_gemm_streams_b_once(kwargs):
    """A Gemm of 1-4 rows over a big constant B: one compiled pass over B (BLAS would pack all
    of B for every call). Sums of hundreds of float32 products in another order than
    onnxruntime's: within 1e-4."""
    assert run_both(*gemm_model(**kwargs), atol=1e-4) == ["_run_few_rows"]


@pytest.mark.parametrize("kwargs", [
    dict(m=8, k=1280, n=1000, trans_b=1, c_shape=(1000,)),            # a batch-8 classifier
    dict(m=49, k=96, n=70, c_shape=(1, 70)),                          # rows in short tiles, a partial panel
    dict(m=13, k=300, n=250, trans_b=1, alpha=0.5, beta=2.0, c_shape=(13, 250)),  # C as a residual
    dict(m=9, k=129, n=517, trans_a=1, c_shape=(9, 1)),               # C per row: a residual too
    dict(m=6, k=257, n=130, trans_a=1, trans_b=1, c_shape=()),
    dict(m=16, k=700, n=90, beta=0.0, c_shape=(90,)),
    dict(m=5, k=400, n=300),
    dict(m=8, k=600, n=33, c_shape=(1,)),                            # one value for every column
])
def test_gemm_of_many_rows_on_the_tiles(kwargs):
    """More rows than the few-row pass takes, over a constant float32 B: our own tiles, alpha
    folded into the packed B, C as a bias per column or a residual."""
    assert run_both(*gemm_model(**kwargs), atol=1e-4) == ["_run_tiles"]


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid", "LeakyRelu"])
def test_gemm_on_the_tiles_with_a_fused_activation(activation):
    """Gemm + activation fused into one step: a clip inside the tile, the others after."""
    model, feeds = gemm_model(8, 300, 70, trans_b=1, c_shape=(70,))
    model.graph.node[0].output[0] = "g"
    model.graph.node.append(helper.make_node(activation, ["g"], ["y"]))
    it = Interpreter(from_onnx(model), device="numba")
    np.testing.assert_allclose(it.run(feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-5, atol=1e-4)
    steps = it._plans["serving_default"].prepared.steps
    assert [step[0].__name__ for step in steps] == ["_run_tiles"]


@pytest.mark.parametrize("alpha,path", [
    (1e37, "run"),            # alpha * B would overflow float32: not folded, the reference scales the sums
    (float("inf"), "run"),
    (-1e-38, "run"),          # alpha * B would flush to subnormals: not folded
    (0.25, "_run_tiles"),
])
def test_gemm_folds_alpha_only_where_it_stays_finite(alpha, path):
    """alpha * (A @ B) as onnxruntime computes it: a huge alpha gives inf (not NaN from an
    inf-scaled B), a tiny one keeps the sums' precision."""
    model, feeds = gemm_model(8, 256, 40, trans_b=1, alpha=alpha, c_shape=(40,))
    b = next(i for i in model.graph.initializer if i.name == "b")
    weights = onnx.numpy_helper.to_array(b) * 100
    b.CopyFrom(onnx.numpy_helper.from_array(weights.astype(np.float32), "b"))
    feeds["a"] = feeds["a"] * np.float32(1e-4)
    it = Interpreter(from_onnx(model), device="numba")
    with np.errstate(over="ignore", invalid="ignore"):
        ours, want = it.run(feeds)["y"], ort_run(model, feeds)["y"]
    np.testing.assert_allclose(ours, want, rtol=1e-4, atol=1e-30)
    assert [step[0].__name__ for step in it._plans["serving_default"].prepared.steps] == [path]


def test_gemm_on_the_tiles_into_a_strided_output():
    """A caller's strided output view takes the reference kernel and fills every value."""
    model, feeds = gemm_model(8, 300, 70, trans_b=1, c_shape=(70,))
    it = Interpreter(from_onnx(model), device="numba")
    (run, ins, _outs, _node), = it._plans["serving_default"].prepared.steps
    wide = np.full((8, 140), -1.0, np.float32)
    run([feeds["a"], *ins[1:]], [wide[:, ::2]])
    np.testing.assert_allclose(wide[:, ::2], ort_run(model, feeds)["y"], rtol=1e-5, atol=1e-4)
    assert (wide[:, 1::2] == -1).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_b", [True, False])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_few_row_gemm_kernel_against_float64(dtype, trans_b, threads):
    """The kernel alone over every column-block split (blocks that do not divide the columns,
    more blocks than fit), with NaN and Inf flowing only into their own columns."""
    from edgerun.devices.numba_kernels import gemm_few_rows

    rng = np.random.default_rng(threads)
    m, k, n = 3, 37, 101
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    b_nt = b if trans_b else b.T
    b_nt = b_nt.copy()
    b_nt[5, 3], b_nt[77, 0] = np.nan, np.inf
    b = b_nt if trans_b else np.ascontiguousarray(b_nt.T)
    c = rng.standard_normal((m, n)).astype(dtype)
    out = np.full((m, n), -7, dtype)
    gemm_few_rows(a, b, trans_b, c, dtype(0.5), dtype(0), out, threads)
    want = 0.5 * (a.astype(np.float64) @ b_nt.T.astype(np.float64)) + c
    np.testing.assert_allclose(out, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    assert np.isnan(out[:, 5]).all() and not np.isnan(np.delete(out, [5, 77], axis=1)).any()


@pytest.mark.parametrize("kwargs", [
    dict(m=64, k=256, n=256, c_shape=(256,), const_b=False),   # B is not a constant: BLAS
    dict(m=8, k=256, n=256, c_shape=(256,), const_b=False),
    dict(m=2, k=3, n=4, const_b=False),
])
def test_gemm_falls_back_to_the_reference(kwargs):
    # k = 256 float32 products summed in BLAS's order, not onnxruntime's: ~1e-5 apart
    assert run_both(*gemm_model(**kwargs), atol=1e-4) == ["run"]


@pytest.mark.parametrize("shape,axis,opset,fast", [
    ((1, 10), -1, 13, True),
    ((2, 3, 4), 2, 13, True),
    ((2, 3, 4), 1, 13, False),   # not the last axis: reference
    ((2, 3, 4), 1, 11, True),    # opset < 13 flattens the tail
    ((5, 6), 0, 11, True),
])
def test_softmax(shape, axis, opset, fast):
    node = helper.make_node("Softmax", ["x"], ["y"], axis=axis)
    model = make_model([node], [helper.make_tensor_value_info("x", F32, shape)],
                       [helper.make_tensor_value_info("y", F32, None)], opset=opset)
    x = (np.random.default_rng(0).standard_normal(shape) * 20).astype(np.float32)
    assert run_both(model, {"x": x}) == (["_run_rows"] if fast else ["run"])


@pytest.mark.parametrize("device", ["numba", "cpu"])
def test_mlp_matches_onnxruntime_on_both_backends(device):
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    run_both(make_mlp(), {"x": x}, device=device)


def conv_model(x_shape, w_shape, *, bias=True, activation=None, dtype=np.float32, **attrs):
    """x -> Conv (weights and bias constant) [-> activation] -> y."""
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    elem = F32 if dtype == np.float32 else TensorProto.DOUBLE
    inits = {"w": rng.standard_normal(w_shape).astype(dtype)}
    names = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(w_shape[0]).astype(dtype)
        names.append("b")
    nodes = [helper.make_node("Conv", names, ["c" if activation else "y"], **attrs)]
    if activation:
        nodes.append(helper.make_node(activation, ["c"], ["y"]))
    model = make_model(nodes, [helper.make_tensor_value_info("x", elem, x_shape)],
                       [helper.make_tensor_value_info("y", elem, None)], inits)
    return model, {"x": rng.standard_normal(x_shape).astype(dtype)}


# the strided, undilated one-group float32 Convs run on the pool as implicit GEMMs over the
# input's phase planes (im2col on numpy's matmul)
# (a window narrower than its stride, 2 columns at stride 3, keeps im2col block by block)
BLOCKS = {((2, 3, 17, 13), (5, 3, 3, 2)): "_run_blocks", ((1, 3, 9, 9), (6, 3, 4, 4)): "_run_phases",
          ((1, 3, 9, 9), (4, 3, 3, 3)): "_run_phases"}


@pytest.mark.parametrize("x_shape,w_shape,kwargs,path", [
    ((1, 3, 32, 32), (16, 3, 3, 3), dict(pads=[1, 1, 1, 1], activation="Relu"), "_run_wide"),
    ((4, 16, 16, 16), (32, 16, 3, 3), dict(pads=[1, 1, 1, 1]), "_run_wide"),
    ((2, 3, 17, 13), (5, 3, 3, 2), dict(strides=[2, 3], pads=[0, 1, 2, 0], bias=False), "_run_gemm"),
    ((1, 2, 20, 20), (4, 2, 3, 3), dict(dilations=[2, 3], pads=[2, 1, 0, 3]), "_run_wide"),
    ((1, 3, 9, 9), (6, 3, 4, 4), dict(auto_pad="SAME_UPPER", strides=[2, 2]), "_run_gemm"),
    ((1, 3, 8, 8), (4, 3, 3, 3), dict(bias=False, activation="Relu"), "_run_wide"),
    ((1, 3, 8, 8), (4, 3, 3, 3), dict(pads=[1, 1, 1, 1], activation="LeakyRelu"), "_run_wide"),
    ((2, 3, 10, 10), (4, 3, 3, 3), dict(pads=[1, 1, 1, 1], dtype=np.float64), "_run_wide"),
    ((1, 2, 4, 4), (3, 2, 5, 5), dict(pads=[2, 2, 2, 2]), "_run_wide"),  # every window hangs over the edge
    ((1, 4, 8, 8), (4, 2, 3, 3), dict(group=2, pads=[1, 0, 1, 0]), "_run_wide"),      # grouped
    ((2, 6, 9, 9), (6, 1, 3, 3), dict(group=6, pads=[1, 1, 1, 1], activation="Relu"), "_run_depthwise_channels_last"),
    ((1, 4, 11, 11), (8, 1, 3, 3), dict(group=4, strides=[2, 2], dilations=[1, 2]), "_run_depthwise"),  # multiplier 2
    ((1, 6, 8, 8), (12, 2, 3, 3), dict(group=3, bias=False, pads=[1, 1, 1, 1]), "_run_wide"),
    ((2, 6, 11, 11), (12, 3, 3, 3), dict(group=2, strides=[2, 2], pads=[1, 0, 1, 2]), "_run_gemm"),  # grouped im2col
    ((1, 3, 8, 8), (4, 3, 1, 1), {}, "_run_gemm"),          # pointwise: no im2col
    ((1, 3, 9, 9), (4, 3, 3, 3), dict(strides=[2, 1], pads=[1, 1, 1, 1]), "_run_gemm"),  # strided: im2col
    # 1-D: small ones gather their columns with numpy, big ones run as 2-D of height 1
    ((1, 3, 16), (4, 3, 3), dict(pads=[1, 1]), "_run_gather_1d"),
    ((2, 6, 5), (4, 3, 1), dict(group=2, activation="Relu"), "_run_gather_1d"),  # pointwise: X is the columns
    ((2, 4, 21), (6, 2, 4), dict(group=2, strides=[3], dilations=[2], pads=[3, 1], activation="Relu"),
     "_run_gather_1d"),
    ((1, 1, 640), (258, 1, 256), dict(strides=[128], bias=False), "_run_gather_1d"),  # an STFT as a Conv
    ((1, 6, 9), (6, 1, 3), dict(group=6, auto_pad="SAME_UPPER", activation="LeakyRelu"), "_run_gather_1d"),
    ((2, 64, 300), (32, 64, 5), dict(pads=[2, 2], activation="Relu"), "_run_lifted"),
    ((2, 64, 3000), (64, 64, 5), dict(strides=[2], pads=[2, 1], activation="Relu"), "_run_lifted"),  # strided
    ((1, 64, 4000), (64, 1, 3), dict(group=64, strides=[2], pads=[1, 1]), "_run_lifted"),  # depthwise
    ((1, 1, 20, 20), (16, 1, 3, 3), dict(pads=[1, 1, 1, 1]), "_run_wide"),  # one channel, 16 filters: not depthwise
])
@pytest.mark.parametrize("pooled", [True, False])
def test_conv(monkeypatch, x_shape, w_shape, kwargs, path, pooled):
    """Each path against onnxruntime, with the products on numba's pool (devices.numba_blas:
    one-group im2col convolutions then run block by block) and on numpy's matmul."""
    if pooled:
        path = BLOCKS.get((x_shape, w_shape), path)
        monkeypatch.setattr(numba_conv, "PHASES_MIN_USEFUL", 0.0)  # (small Convs: phases too)
        monkeypatch.setattr(numba_conv, "PHASES_MIN_DEPTH", 0)
    else:
        monkeypatch.setattr(numba_conv, "gemm_in_pool", lambda: False)
    model, feeds = conv_model(x_shape, w_shape, **kwargs)
    # onnxruntime has no float64 Conv: a float64 model is checked against its float32 twin
    twin = conv_model(x_shape, w_shape, **{**kwargs, "dtype": np.float32})
    steps = run_both(model, feeds, oracle=twin, atol=1e-4)  # float32 sums of up to 144 products
    assert steps[0] == path


@pytest.mark.parametrize("strides,path", [([1, 1], "_run_wide"), ([2, 2], "_run_phases")])
def test_conv_propagates_nan_like_the_reference(monkeypatch, strides, path):
    monkeypatch.setattr(numba_conv, "PHASES_MIN_USEFUL", 0.0)  # (a small Conv over phases too)
    monkeypatch.setattr(numba_conv, "PHASES_MIN_DEPTH", 0)
    model, feeds = conv_model((1, 2, 6, 6), (3, 2, 3, 3), pads=[1, 1, 1, 1], strides=strides, activation="Relu")
    feeds["x"][0, 1, 2, 3] = np.nan
    want = Interpreter(from_onnx(model), device="cpu").run(feeds)["y"]
    it = Interpreter(from_onnx(model), device="numba")
    got = it.run(feeds)["y"]
    assert it._plans["serving_default"].prepared.steps[0][0].__name__ == path
    assert np.isnan(want).any()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # NaN where the reference has NaN


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 9), (3, 2, 2, 3, 4)])
def test_global_average_pool(shape):
    node = helper.make_node("GlobalAveragePool", ["x"], ["y"])
    model = make_model([node], [helper.make_tensor_value_info("x", F32, shape)],
                       [helper.make_tensor_value_info("y", F32, None)])
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    assert run_both(model, {"x": x}) == ["_run_planes"]


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 0, 4, 4), (0, 3, 5)])
def test_global_average_pool_of_nothing(shape):
    node = helper.make_node("GlobalAveragePool", ["x"], ["y"])
    model = make_model([node], [helper.make_tensor_value_info("x", F32, shape)],
                       [helper.make_tensor_value_info("y", F32, None)])
    got = Interpreter(from_onnx(model), device="numba").run({"x": np.zeros(shape, np.float32)})["y"]
    assert got.shape == shape[:2] + (1,) * (len(shape) - 2)


def test_conv_gathers_columns_a_few_samples_at_a_time(monkeypatch):
    """On numpy's matmul, the im2col buffer holds `chunk` samples, as the reference's does, not
    the whole batch."""
    from edgerun.runtime.kernels import conv, spatial

    monkeypatch.setattr(numba_conv, "gemm_in_pool", lambda: False)
    monkeypatch.setattr(conv, "COLUMN_BUDGET", 30_000)  # 4 * 9 * 400 = 14,400 columns a sample: 2 at a time
    model, feeds = conv_model((5, 4, 20, 20), (6, 4, 3, 3), pads=[1, 1, 1, 1])
    spatial._local.__dict__.setdefault("pool", {}).pop("numba.conv.col", None)
    assert run_both(model, feeds, atol=1e-4)[0] == "_run_wide"
    # wide rows: 36 column rows of (20 - 1) * 22 + 20 = 438 positions a sample, 2 samples at a time
    assert spatial._local.pool["numba.conv.col"].nbytes <= 2 * 36 * 438 * 4


def test_conv_blocks_keep_their_columns_small(monkeypatch):
    """On numba's pool, each thread's im2col columns hold one block of output positions; the
    blocks (32 positions of 576 rows here) do not divide the 400 positions of an image. (A
    dilated strided Conv: undilated ones run over phase planes, _run_phases.)"""
    from edgerun.runtime.kernels import spatial

    monkeypatch.setattr(numba_conv, "COLUMN_BLOCK_BYTES", 100_000)
    model, feeds = conv_model((5, 64, 40, 40), (6, 64, 3, 3), pads=[2, 2, 2, 2], strides=[2, 2], dilations=[2, 2])
    spatial._local.__dict__.setdefault("pool", {}).pop("numba.conv.blocks", None)
    assert run_both(model, feeds, atol=1e-3)[0] == "_run_blocks"
    per_thread = spatial._local.pool["numba.conv.blocks"].nbytes / numba.config.NUMBA_NUM_THREADS
    assert per_thread == 576 * 32 * 4


@pytest.mark.parametrize("flat", [True, False])
@pytest.mark.parametrize("shape,attrs,outputs,fast", [
    ((2, 3, 8, 8), dict(kernel_shape=[2, 2], strides=[2, 2]), 1, "_run_2x2"),
    ((1, 4, 7, 9), dict(kernel_shape=[2, 2], strides=[2, 2]), 1, "_run_2x2"),              # odd sizes: floor
    ((3, 33, 20, 18), dict(kernel_shape=[2, 2], strides=[2, 2]), 1, "_run_2x2"),           # planes on two threads
    ((1, 4, 7, 9), dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), 1, "_run_flat*"),  # overhang
    ((1, 2, 8, 8), dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1]), 1, "_run_window"),  # end pads
    ((1, 2, 9, 9), dict(kernel_shape=[3, 3], strides=[2, 2]), 1, "_run_flat*"),
    ((2, 64, 28, 28), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), 1, "_run_flat*"),  # ResNet
    ((1, 3, 13, 13), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), 1, "_run_flat*"),  # squeezenet
    ((2, 5, 56, 56), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), 1, "_run_window"),  # a big plane
    # 3x3 stride 2 over the row's even and odd columns: window starts on either parity, odd widths
    ((1, 2, 15, 16), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 2, 1, 2]), 1, "_run_window"),
    ((1, 2, 15, 17), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 2, 1, 1]), 1, "_run_flat*"),
    ((2, 3, 11, 17), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1), 1, "_run_flat*"),
    ((1, 2, 12, 111), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 2, 0, 1]), 1, "_run_window"),
    ((1, 2, 10, 11), dict(kernel_shape=[3, 2], strides=[1, 3], dilations=[2, 1], pads=[2, 0, 1, 1]), 1,
     "_run_window"),
    # a last window starting in the padding after the plane: row by row
    ((1, 2, 6, 6), dict(kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 2, 2], ceil_mode=1), 1, "_run_window"),
    ((1, 2, 6, 6), dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER"), 1, "_run_flat"),
    # stride 1 keeping the plane's size: whole flat planes (Inception's 3x3 pools)
    ((2, 5, 7, 7), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 1, "_run_flat"),
    ((1, 3, 3, 4), dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2]), 1, "_run_flat"),     # window beyond the plane
    ((1, 3, 6, 9), dict(kernel_shape=[3, 4], pads=[2, 0, 0, 3]), 1, "_run_flat"),     # lopsided pads
    ((1, 2, 6, 6), dict(kernel_shape=[2, 2], auto_pad="SAME_LOWER"), 1, "_run_flat"),
    ((2, 37, 7, 7), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 1, "_run_flat"),    # runs of planes, a short last
    ((1, 3, 40, 40), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 1, "_run_flat"),   # a plane over one run
    ((2, 3, 1, 1), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 1, "_run_flat"),     # centred 3-tap passes at
    ((1, 3, 1, 5), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 1, "_run_flat"),     # planes of one row or
    ((1, 3, 5, 1), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 1, "_run_flat"),     # column, and of two
    ((3, 3, 2, 2), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 1, "_run_flat"),
    # a one-column output whose 3-wide window's inside starts past it: nothing written past the row
    ((1, 3, 5, 1), dict(kernel_shape=[3, 3], pads=[0, 2, 0, 0]), 1, "_run_flat*"),
    ((1, 3, 5, 3), dict(kernel_shape=[3, 3], dilations=[1, 2], pads=[0, 2, 0, 0]), 1, "_run_window"),
    ((1, 2, 8, 8), dict(kernel_shape=[2, 2], strides=[2, 2]), 2, "run"),               # Indices wanted
    ((1, 2, 9), dict(kernel_shape=[3], strides=[2]), 1, "run"),                        # 1-D: reference
])
def test_max_pool(monkeypatch, shape, attrs, outputs, fast, flat):
    """Each path against onnxruntime. "_run_flat*": a window that is not the plane's own size
    over a small plane, by flat runs; without them (flat=False), row by row as over bigger
    planes."""
    if not flat:
        monkeypatch.setattr(numba_spatial, "FLAT_STRIDED_PLANE", 0)
    fast = fast.rstrip("*") if flat or not fast.endswith("*") else "_run_window"
    names = ["y", "i"][:outputs]
    node = helper.make_node("MaxPool", ["x"], names, **attrs)
    outs = [helper.make_tensor_value_info("y", F32, None),
            helper.make_tensor_value_info("i", TensorProto.INT64, None)][:outputs]
    model = make_model([node], [helper.make_tensor_value_info("x", F32, shape)], outs)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    assert run_both(model, {"x": x}) == [fast]


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[2, 2], strides=[2, 2]),
                                   dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                                   dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])])
def test_max_pool_propagates_nan_from_any_position(attrs):
    node = helper.make_node("MaxPool", ["x"], ["y"], **attrs)
    model = make_model([node], [helper.make_tensor_value_info("x", F32, (1, 4, 2, 2))],
                       [helper.make_tensor_value_info("y", F32, None)])
    x = np.random.default_rng(3).standard_normal((1, 4, 2, 2)).astype(np.float32)
    for channel, (row, col) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        x[0, channel, row, col] = np.nan
    want = Interpreter(from_onnx(model), device="cpu").run({"x": x})["y"]
    got = Interpreter(from_onnx(model), device="numba").run({"x": x})["y"]
    assert np.isnan(want).all() and np.isnan(got).all()


@pytest.mark.parametrize("flat", [True, False])
@pytest.mark.parametrize("pads", [[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 2]])
def test_max_pool_stride_2_keeps_nan_where_the_reference_does(monkeypatch, pads, flat):
    """NaN anywhere in a wide row wins every window that reads it, by flat runs and row by row
    through the even/odd split."""
    monkeypatch.setattr(numba_spatial, "FLAT_STRIDED_PLANE", numba_spatial.FLAT_STRIDED_PLANE if flat else 0)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=pads)
    model = make_model([node], [helper.make_tensor_value_info("x", F32, (1, 3, 9, 23))],
                       [helper.make_tensor_value_info("y", F32, None)])
    x = np.random.default_rng(5).standard_normal((1, 3, 9, 23)).astype(np.float32)
    x[0, 0, 4, 7], x[0, 1, 0, 0], x[0, 2, 8, 22], x[0, 2, 3, 12] = np.nan, np.nan, np.nan, np.inf
    want = Interpreter(from_onnx(model), device="cpu").run({"x": x})["y"]
    it = Interpreter(from_onnx(model), device="numba")
    got = it.run({"x": x})["y"]
    path = "_run_flat" if flat else "_run_window"
    assert [s[0].__name__ for s in it._plans["serving_default"].prepared.steps] == [path]
    assert np.isnan(want).any()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape,attrs,fast", [
    ((1, 8, 14, 14), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), "_run_same"),          # Inception v2
    ((1, 8, 14, 14), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1), "_run_same"),
    ((2, 37, 7, 7), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), "_run_same"),           # runs of planes, a short last
    ((1, 3, 40, 40), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), "_run_same"),          # a plane over one run
    ((2, 3, 1, 1), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), "_run_same"),            # one-row, one-column
    ((1, 3, 1, 5), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), "_run_same"),            # and two-by-two planes
    ((1, 3, 5, 1), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1), "_run_same"),
    ((3, 3, 2, 2), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), "_run_same"),
    ((2, 3, 3, 4), dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2]), "_run_same"),             # window beyond the plane
    ((1, 3, 6, 9), dict(kernel_shape=[3, 4], pads=[2, 0, 0, 3], count_include_pad=1), "_run_same"),
    ((1, 3, 6, 9), dict(kernel_shape=[1, 1]), "_run_same"),
    ((2, 3, 11, 17), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1), "_run_window"),
    ((2, 3, 11, 17), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 2, 1], ceil_mode=1,
                          count_include_pad=1), "_run_window"),
    ((1, 2, 10, 11), dict(kernel_shape=[3, 2], strides=[1, 3], dilations=[2, 1], pads=[2, 0, 1, 1]), "_run_window"),
    ((1, 4, 7, 7), dict(kernel_shape=[7, 7]), "_run_window"),                             # global-sized window
    ((1, 2, 5, 6), dict(kernel_shape=[2, 3], auto_pad="SAME_UPPER"), "_run_same"),
    ((1, 2, 5, 6), dict(kernel_shape=[2, 3], strides=[2, 1], auto_pad="SAME_LOWER", count_include_pad=1),
     "_run_window"),
    ((1, 2, 9), dict(kernel_shape=[3], strides=[2]), "run"),                               # 1-D: reference
])
def test_average_pool(shape, attrs, fast):
    node = helper.make_node("AveragePool", ["x"], ["y"], **attrs)
    model = make_model([node], [helper.make_tensor_value_info("x", F32, shape)],
                       [helper.make_tensor_value_info("y", F32, None)], opset=19)  # dilations: 19
    x = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    assert run_both(model, {"x": x}) == [fast]


@pytest.mark.parametrize("attrs,path", [(dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), "_run_window"),
                                        (dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), "_run_same")])
def test_average_pool_float64_and_nan_inf_match_the_reference(attrs, path):
    """float64 against the reference kernel to 1e-12 (onnxruntime has no float64 AveragePool);
    a NaN or an infinity reaches exactly the windows that read it."""
    node = helper.make_node("AveragePool", ["x"], ["y"], **attrs)
    for dtype, elem in ((np.float64, TensorProto.DOUBLE), (np.float32, F32)):
        model = make_model([node], [helper.make_tensor_value_info("x", elem, (1, 3, 9, 10))],
                           [helper.make_tensor_value_info("y", elem, None)])
        x = np.random.default_rng(7).standard_normal((1, 3, 9, 10)).astype(dtype)
        x[0, 0, 4, 5], x[0, 1, 0, 0], x[0, 2, 8, 9] = np.nan, np.inf, -np.inf
        it = Interpreter(from_onnx(model), device="numba")
        got = it.run({"x": x})["y"]
        want = Interpreter(from_onnx(model), device="cpu").run({"x": x})["y"]
        assert [s[0].__name__ for s in it._plans["serving_default"].prepared.steps] == [path]
        assert got.dtype == dtype and np.isnan(want).any() and np.isinf(want).any()
        np.testing.assert_allclose(got, want, rtol=1e-12 if dtype == np.float64 else 1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype,elem", [(np.float32, F32), (np.float64, TensorProto.DOUBLE)])
def test_max_pool_keeping_the_plane_size_matches_the_reference_with_nan_and_inf(dtype, elem):
    """The flat-plane stride-1 pass: NaN wins every window that reads it, at a row's ends and
    in the top and bottom rows too; -inf beside padding stays -inf; float64 as float32."""
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model = make_model([node], [helper.make_tensor_value_info("x", elem, (1, 3, 6, 7))],
                       [helper.make_tensor_value_info("y", elem, None)])
    x = np.random.default_rng(8).standard_normal((1, 3, 6, 7)).astype(dtype)
    x[0, 0, 0, 6], x[0, 0, 3, 3], x[0, 1, 5, 0], x[0, 2, 2, 0] = np.nan, np.nan, np.nan, np.inf
    x[0, 2, 4:, 5:] = -np.inf
    it = Interpreter(from_onnx(model), device="numba")
    got = it.run({"x": x})["y"]
    want = Interpreter(from_onnx(model), device="cpu").run({"x": x})["y"]
    assert [s[0].__name__ for s in it._plans["serving_default"].prepared.steps] == ["_run_flat"]
    assert got.dtype == dtype and np.isnan(want).sum() == 4 + 9 + 4 and got[0, 2, 5, 6] == -np.inf
    np.testing.assert_array_equal(got, want)


def test_max_pool_of_minus_infinity_beside_padding_is_minus_infinity():
    """Padding never wins, not even over -inf (onnxruntime gives the lowest float there; the
    reference and the compiled pass give -inf, the maximum of what the window reads)."""
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    model = make_model([node], [helper.make_tensor_value_info("x", F32, (1, 2, 6, 6))],
                       [helper.make_tensor_value_info("y", F32, None)])
    x = np.random.default_rng(4).standard_normal((1, 2, 6, 6)).astype(np.float32)
    x[0, 0, :2, :2] = -np.inf  # the corner window reads only these and padding
    want = Interpreter(from_onnx(model), device="cpu").run({"x": x})["y"]
    got = Interpreter(from_onnx(model), device="numba").run({"x": x})["y"]
    np.testing.assert_array_equal(got, want)
    assert got[0, 0, 0, 0] == -np.inf


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pools_keeping_the_plane_size_fill_a_strided_output(op):
    """A caller's strided output view (the planner never makes one): the flat-plane passes need
    a contiguous output, so such a call takes the row-by-row pass and still fills every value."""
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model = make_model([node], [helper.make_tensor_value_info("x", F32, (1, 3, 5, 5))],
                       [helper.make_tensor_value_info("y", F32, None)])
    x = np.random.default_rng(9).standard_normal((1, 3, 5, 5)).astype(np.float32)
    want = ort_run(model, {"x": x})["y"]
    it = Interpreter(from_onnx(model), device="numba")
    (run, _ins, _outs, _node), = it._plans["serving_default"].prepared.steps
    assert run.__name__ == {"MaxPool": "_run_flat", "AveragePool": "_run_same"}[op]
    wide = np.full((1, 3, 5, 10), -7.0, np.float32)
    run([x], [wide[..., ::2]])
    np.testing.assert_allclose(wide[..., ::2], want, rtol=1e-5, atol=1e-6)
    assert (wide[..., 1::2] == -7).all()


@pytest.mark.parametrize("x_shape,kernel,strides,dilations,pads", [
    ((2, 3, 9, 11), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    ((1, 4, 14, 14), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
    ((1, 2, 13, 10), (3, 2), (2, 3), (2, 1), (2, 0, 1, 2)),     # lopsided pads, dilation, unequal strides
    ((1, 5, 7, 7), (5, 5), (1, 1), (1, 1), (0, 0, 0, 0)),      # no border at all
    ((1, 1, 4, 4), (3, 3), (3, 3), (1, 1), (4, 0, 2, 5)),      # pads wider than the window
])
def test_im2col_by_gathering_from_bordered_planes(x_shape, kernel, strides, dilations, pads):
    """pad_planes + gather_columns with the tables a Conv works out at prepare, against im2col
    written out in numpy: every (channel, tap) row and output column, zeros outside."""
    rng = np.random.default_rng(sum(x_shape))
    x = rng.standard_normal(x_shape).astype(np.float32)
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    top, left, bottom, right = pads[0], pads[1], pads[2], pads[3]
    n, c, h, w = x_shape
    oh = (h + top + bottom - (kh - 1) * dh - 1) // sh + 1
    ow = (w + left + right - (kw - 1) * dw - 1) // sw + 1
    wide = np.zeros((n, c, h + top + bottom + sh * kh * dh, w + left + right + sw * kw * dw), np.float32)
    wide[:, :, top : top + h, left : left + w] = x
    want = np.stack([wide[:, :, i * dh : i * dh + oh * sh : sh, j * dw : j * dw + ow * sw : sw]
                     for i in range(kh) for j in range(kw)], axis=2).reshape(n, c * kh * kw, oh * ow)
    conv = numba_conv.NumbaConv.__new__(numba_conv.NumbaConv)
    conv.geometry = (kh, kw, sh, sw, dh, dw, top, left)

    class Window:
        out_shape = (oh, ow)

    class Params:
        window = Window()

    conv.params = Params()
    conv._prepare_gather(x)  # (it reads the shape only)
    got = np.full((n, c * kh * kw, oh * ow), np.nan, np.float32)
    conv._im2col(x, got)
    np.testing.assert_array_equal(got, want)
