"""Generate the .tflite test models of tests/converters/tflite/fixtures/ with TensorFlow's own converter, once.

    pip install -e ".[tflite-fixtures]"     # TensorFlow (and tf_keras, for the fused LSTM); the tests never need it
    python scripts/make_tflite_fixtures.py [--out tests/converters/tflite/fixtures]

The files are committed; the tests compare edgerun's `from_tflite` against LiteRT's interpreter on them with
random inputs of their own. Weights and the int8 calibration inputs come from fixed numpy seeds, so a rerun with
the same TensorFlow version writes the same bytes. The models are Keras layers called inside a tf.function (or
plain TF ops), converted by tf.lite.TFLiteConverter. Before writing anything the script reads every model's
operator codes back and fails unless they are exactly the "ops:" lists below: the converter's lowering changes
between versions, and this table must stay true. Produced with TensorFlow 2.21.0.

Fixtures (float32 unless named int8), their signature inputs -> outputs, and the builtin ops over all subgraphs:

mobile_block_f32.tflite    image 1x32x32x3 -> probs 1x10. A MobileNetV2/V3-like block: stride-2 conv (BatchNorm
    folded) + ReLU6, inverted residual (1x1 expand, depthwise 3x3, squeeze-excite MEAN/Dense/Logistic/MUL, 1x1
    project, ADD), hard-swish, max and average pool, concat, RESIZE_BILINEAR with half_pixel_centers and with
    align_corners, RESIZE_NEAREST_NEIGHBOR (half_pixel_centers), stride-2 TRANSPOSE_CONV, flatten, dense, softmax.
    ops: ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D FULLY_CONNECTED HARD_SWISH LOGISTIC
         MAX_POOL_2D MEAN MUL RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR SOFTMAX TRANSPOSE_CONV
mobile_block_fp16.tflite   the same with float16 weights and biases, each behind a DEQUANTIZE to float32.
    ops: ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEQUANTIZE FULLY_CONNECTED HARD_SWISH
         LOGISTIC MAX_POOL_2D MEAN MUL RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR SOFTMAX TRANSPOSE_CONV
mobile_block_int8.tflite   the same fully int8 (per-channel weight scales, int32 biases), int8 input and output.
    ops: ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D FULLY_CONNECTED HARD_SWISH LOGISTIC
         MAX_POOL_2D MEAN MUL RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR SOFTMAX TRANSPOSE_CONV
dense_int8.tflite          features 1x16 int8 -> probs 1x8 int8: Dense+ReLU, Dense, Softmax, fully int8.
    ops: FULLY_CONNECTED SOFTMAX
ops_f32.tflite             x, y 2x3x4x8 and v ?x6 (dynamic batch, 1 by default) -> 63 outputs named for what they
    test (see OpsModel), some int32 (argmax, shape), int64 (argmin) or bool (compare_logical).
    ops: ABS ADD ARG_MAX ARG_MIN BATCH_MATMUL BROADCAST_TO CAST CEIL CONCATENATION COS CUMSUM DEPTH_TO_SPACE DIV
         ELU EQUAL EXP EXPAND_DIMS FLOOR FLOOR_DIV FLOOR_MOD GATHER GATHER_ND GELU GREATER GREATER_EQUAL
         L2_NORMALIZATION LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOG_SOFTMAX MAXIMUM
         MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 POW PRELU REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU
         RELU6 RESHAPE ROUND RSQRT SELECT SELECT_V2 SHAPE SIGN SIN SLICE SPACE_TO_DEPTH SPLIT SPLIT_V SQRT SQUARE
         SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM TANH TILE TRANSPOSE UNPACK
while_f32.tflite           x 1x8, limit scalar -> steps int32 scalar, x 1x8: a WHILE whose trip count depends on
    the inputs (cond and body are subgraphs 1 and 2).
    ops: ABS ADD GREATER LESS LOGICAL_AND MUL SUB SUM WHILE
if_f32.tflite              x 1x8, flag scalar -> y 1x8: IF on flag > 0 between two different branch subgraphs.
    ops: ADD BATCH_MATMUL GREATER IF LOGISTIC MUL SUB TANH
signatures_f32.tflite      two SignatureDefs over two subgraphs: encode (x 1x16 -> code 1x4) and decode
    (code 1x4 -> x 1x16).
    ops: FULLY_CONNECTED LOGISTIC MUL SUB TANH
sparse_f32.tflite          x 1x8x8x16 -> y 1x32: Conv2D and Dense whose weights are ~85 % zero (in blocks of 4 input
    channels); the converter stores them sparse (dense/CSR dim metadata, no block map) and expands them by DENSIFY.
    ops: CONV_2D DENSIFY FULLY_CONNECTED MEAN
lstm_f32.tflite            x 1x6x5 -> lstm 1x6x8: a tf_keras LSTM(8, return_sequences) fused by the converter.
    ops: UNIDIRECTIONAL_SEQUENCE_LSTM

What the converter does not keep (so no fixture has it): STRIDED_SLICE with ellipsis or new-axis masks (they
become begin/end/shrink masks and a RESHAPE); SQUEEZE and EXPAND_DIMS on static shapes (RESHAPE); only a squeeze of
all size-1 dims of a dynamic shape stays SQUEEZE (ops_f32's "squeeze" is a scalar when v has batch 1);
tf.nn.gelu(approximate=False) (lowers to Erfc, unsupported; 0.5*y*(1+erf(y/sqrt 2)) fuses to GELU instead).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "tests" / "converters" / "tflite" / "fixtures"
SEED = 0

try:
    import keras
    import tensorflow as tf
    import tf_keras
    from tensorflow.lite.python import schema_py_generated as schema
except ImportError:
    print('error: this script needs tensorflow and tf_keras: pip install -e ".[tflite-fixtures]"', file=sys.stderr)
    sys.exit(2)

L = keras.layers
F32 = tf.float32


# ---------------------------------------------------------------- weights


def randomize(layers: list, rng: np.random.Generator) -> None:
    """Give every weight of `layers` a non-trivial random value (fan-in scaled, so activations stay O(1))."""
    for layer in layers:
        for var in layer.weights:
            name, shape = var.name, tuple(var.shape)
            if name in ("gamma", "moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            elif name in ("beta", "moving_mean", "bias"):
                value = rng.normal(0.0, 0.2, shape)
            elif name == "alpha":
                value = rng.uniform(0.05, 0.4, shape)
            else:
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
                if isinstance(layer, L.DepthwiseConv2D):
                    fan_in = int(np.prod(shape[:2]))
                value = rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), shape)
            var.assign(value.astype(np.float32))


# ---------------------------------------------------------------- models


class MobileBlock(tf.Module):
    """A tiny MobileNetV2/V3-like NHWC network: 1x32x32x3 image -> 1x10 probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)
        self.stem_bn = L.BatchNormalization()
        self.expand = L.Conv2D(32, 1)
        self.depthwise = L.DepthwiseConv2D(3, padding="same")
        self.se_reduce = L.Dense(8, activation="relu")
        self.se_expand = L.Dense(32, activation="sigmoid")
        self.project = L.Conv2D(16, 1)
        self.max_pool = L.MaxPooling2D(2)
        self.avg_pool = L.AveragePooling2D(3, strides=2, padding="same")
        self.upconv = L.Conv2DTranspose(8, 3, strides=2, padding="same")
        self.mix = L.Conv2D(8, 2, strides=2)
        self.head_pool = L.AveragePooling2D(2)
        self.head = L.Dense(10)
        self.layers = [self.stem, self.stem_bn, self.expand, self.depthwise, self.se_reduce, self.se_expand,
                       self.project, self.upconv, self.mix, self.head]

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], F32, name="image")])
    def __call__(self, image):
        x = tf.nn.relu6(self.stem_bn(self.stem(image), training=False))  # 16x16x16
        h = tf.nn.relu6(self.expand(x))  # 16x16x32
        h = tf.nn.relu6(self.depthwise(h))
        s = tf.reduce_mean(h, axis=[1, 2])  # squeeze-excite
        s = tf.reshape(self.se_expand(self.se_reduce(s)), [1, 1, 1, 32])
        x = x + self.project(h * s)  # inverted residual
        x = x * tf.nn.relu6(x + 3.0) / 6.0  # hard-swish
        c = tf.concat([self.max_pool(x), self.avg_pool(x)], axis=-1)  # 8x8x32
        half_pixel = tf.image.resize(c, [16, 16], method="bilinear")
        corners = tf.compat.v1.image.resize_bilinear(c, [16, 16], align_corners=True)
        nearest = tf.image.resize(c, [16, 16], method="nearest")
        y = tf.concat([half_pixel, corners, nearest, self.upconv(c)], axis=-1)  # 16x16x104
        y = self.head_pool(tf.nn.relu(self.mix(y)))  # 4x4x8
        logits = self.head(tf.reshape(y, [1, 128]))
        return {"probs": tf.nn.softmax(logits)}


class DenseNet(tf.Module):
    """A small MLP: 1x16 -> Dense+ReLU -> Dense -> Softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = L.Dense(32, activation="relu")
        self.out = L.Dense(8)
        self.layers = [self.hidden, self.out]

    @tf.function(input_signature=[tf.TensorSpec([1, 16], F32, name="features")])
    def __call__(self, features):
        return {"probs": tf.nn.softmax(self.out(self.hidden(features)))}


class OpsModel(tf.Module):
    """Many element-wise, shape and reduction ops, one named output each (x, y: 2x3x4x8; v: ?x6)."""

    def __init__(self) -> None:
        super().__init__()
        self.prelu = L.PReLU(shared_axes=[1, 2])
        self.layers = [self.prelu]

    @tf.function(input_signature=[
        tf.TensorSpec([2, 3, 4, 8], F32, name="x"),
        tf.TensorSpec([2, 3, 4, 8], F32, name="y"),
        tf.TensorSpec([None, 6], F32, name="v"),
    ])
    def __call__(self, x, y, v):
        pos_x = tf.abs(x) + 0.5
        pos_y = tf.abs(y) + 0.5
        out = {}
        out["sub"] = x - y
        out["div"] = x / pos_y
        out["maximum"] = tf.maximum(x, y)
        out["minimum"] = tf.minimum(x, y)
        out["squared_difference"] = tf.math.squared_difference(x, y)
        out["rsqrt"] = tf.math.rsqrt(pos_x)
        out["sqrt"] = tf.sqrt(pos_x)
        out["exp"] = tf.exp(x)
        out["log"] = tf.math.log(pos_x)
        out["pow"] = tf.pow(pos_x, y)
        out["tanh"] = tf.tanh(x)
        out["elu"] = tf.nn.elu(x)
        out["leaky_relu"] = tf.nn.leaky_relu(x, alpha=0.15)
        out["prelu"] = self.prelu(x)
        out["gelu_tanh"] = tf.nn.gelu(x, approximate=True)
        # tf.nn.gelu(approximate=False) lowers to Erfc, which TFLite lacks; this form fuses to GELU(approximate=false)
        # (on y: on x it would share 0.5 * x with the tanh form and neither would fuse).
        out["gelu_erf"] = 0.5 * y * (1.0 + tf.math.erf(y * np.float32(1.0 / np.sqrt(2.0))))
        out["log_softmax"] = tf.nn.log_softmax(x, axis=-1)
        out["l2_normalize"] = tf.math.l2_normalize(x, axis=-1)
        out["argmax"] = tf.argmax(x, axis=-1, output_type=tf.int32)
        out["argmin"] = tf.argmin(x, axis=1)  # int64
        rounded_equal = tf.equal(tf.round(x * 2.0), tf.round(y * 2.0))
        rounded_differ = tf.not_equal(tf.round(x), tf.round(y))
        cond = tf.logical_or(tf.logical_and(x > y, x >= -0.25), tf.logical_and(x < -1.0, y <= 0.5))
        cond = tf.logical_or(cond, rounded_equal)
        cond = tf.logical_and(cond, tf.logical_not(tf.logical_and(rounded_differ, x > 1.5)))
        out["compare_logical"] = cond
        out["select"] = tf.where(cond, x, y)
        out["select_broadcast"] = tf.where(x[..., :1] > 0.0, x, y[:1])
        out["cast"] = tf.cast(cond, F32) + tf.cast(tf.argmax(y, axis=-1), F32)[..., None]
        out["shape"] = tf.shape(v)
        out["expand_dims"] = tf.expand_dims(v, 1)
        # Only a squeeze of every size-1 dim of a dynamic shape stays SQUEEZE (static ones become RESHAPE):
        # with v of shape [1, 6] the result is a scalar.
        out["squeeze"] = tf.squeeze(tf.reduce_sum(v, axis=-1, keepdims=True))
        out["floor_ceil_round"] = tf.floor(x) + tf.math.ceil(y) * 2.0 + tf.round(x * 3.0) * 4.0
        out["floor_div_mod"] = tf.math.floordiv(x, pos_y) + tf.math.floormod(y, pos_x) * 10.0
        out["sign_square_neg"] = tf.sign(x) + tf.square(y) - tf.math.negative(y) * 0.5
        out["sin_cos"] = tf.sin(x) * tf.cos(y)
        # The PReLU layer computes relu(x) - alpha * relu(-x): sharing relu(x) or -x breaks its fusion to PRELU, hence
        # y here and in NEG above; RELU6 reads a SQUARE since an op with a fused activation would absorb it.
        out["relu_relu6"] = tf.nn.relu(y) - tf.nn.relu6(tf.square(y))
        out["stack"] = tf.stack([x[0], y[1]], axis=1)
        first, second, third = tf.unstack(x, axis=1)
        out["unstack"] = first * 2.0 + second - third
        out["tile"] = tf.tile(x, [1, 2, 1, 1])
        out["broadcast_to"] = tf.broadcast_to(tf.reduce_sum(x, axis=1, keepdims=True), [2, 3, 4, 8])
        out["cumsum"] = tf.cumsum(x, axis=2)
        out["cumsum_exclusive_reverse"] = tf.cumsum(x, axis=-1, exclusive=True, reverse=True)
        out["reduce_max"] = tf.reduce_max(x, axis=[1, 3])
        out["reduce_min"] = tf.reduce_min(x, axis=2, keepdims=True)
        out["reduce_sum"] = tf.reduce_sum(x, axis=-1)
        out["reduce_prod"] = tf.reduce_prod(pos_x, axis=1)
        out["strided_slice"] = x[:, 1:, ::2, 1:7:3]
        out["strided_slice_negative"] = x[::-1, :, -3:-1]
        out["strided_slice_shrink_newaxis"] = x[1, :, tf.newaxis, 2:]
        out["strided_slice_ellipsis"] = x[..., 1::2] + y[..., 0:1]
        out["strided_slice_masks"] = x[:1, :, 1:, :5]
        out["slice"] = tf.slice(x, [0, 1, 1, 2], [2, 2, -1, 4])
        out["gather_axis"] = tf.gather(x, [3, 0, 2], axis=2)
        out["gather_batch_dims"] = tf.gather(x, [[2, 0], [1, 1]], axis=1, batch_dims=1)
        out["gather_nd"] = tf.gather_nd(x, [[0, 2], [1, 0], [1, 1]])
        out["transpose"] = tf.transpose(x, [0, 3, 1, 2])
        out["reshape"] = tf.reshape(x, [6, 32]) + 1.0
        halves = tf.split(x, 2, axis=-1)
        out["split"] = halves[0] * halves[1]
        parts = tf.split(y, [1, 5, 2], axis=-1)
        out["split_v"] = tf.concat([parts[2], parts[0]], axis=-1) + tf.reduce_sum(parts[1], axis=-1, keepdims=True)
        out["pad"] = tf.pad(x, [[0, 0], [1, 2], [0, 1], [2, 0]])
        out["pad_v2"] = tf.pad(x, [[0, 1], [0, 0], [2, 1], [0, 0]], constant_values=-1.5)
        out["mirror_pad_reflect"] = tf.pad(x, [[0, 0], [1, 2], [2, 1], [0, 0]], mode="REFLECT")
        out["mirror_pad_symmetric"] = tf.pad(x, [[1, 0], [3, 2], [0, 4], [0, 0]], mode="SYMMETRIC")
        d2s = tf.nn.depth_to_space(x, 2)  # 2x6x8x2
        out["depth_to_space"] = d2s
        out["space_to_depth"] = tf.nn.space_to_depth(d2s * pos_y[:1, :1, :1, :2], 2)
        out["batch_matmul_adj_y"] = tf.matmul(x, y, transpose_b=True)
        out["batch_matmul_adj_x"] = tf.matmul(x, y, transpose_a=True)
        return out


class WhileModel(tf.Module):
    """x: 1x8, limit: scalar. Halves x toward 0.25 until sum(x*x) <= |limit| + 0.5 (at most 40 steps)."""

    @tf.function(input_signature=[tf.TensorSpec([1, 8], F32, name="x"), tf.TensorSpec([], F32, name="limit")])
    def __call__(self, x, limit):
        bound = tf.abs(limit) + 0.5

        def keep_going(i, x):
            return tf.logical_and(i < 40, tf.reduce_sum(x * x) > bound)

        def step(i, x):
            return i + 1, x * 0.5 + 0.125

        steps, x = tf.while_loop(keep_going, step, [tf.constant(0), x * 4.0])
        return {"steps": steps, "x": x - 1.0}


class IfModel(tf.Module):
    """x: 1x8, flag: scalar. flag > 0 picks tanh(x @ W) * 2, else sigmoid(x) - x * 0.5 (kept as IF)."""

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.w = tf.constant(rng.normal(0.0, 0.5, (8, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8], F32, name="x"), tf.TensorSpec([], F32, name="flag")])
    def __call__(self, x, flag):
        y = tf.cond(flag > 0.0, lambda: tf.tanh(tf.matmul(x, self.w)) * 2.0, lambda: tf.sigmoid(x) - x * 0.5)
        return {"y": y + 1.0}


class Codec(tf.Module):
    """Two signatures over two subgraphs: encode (1x16 -> 1x4) and decode (1x4 -> 1x16)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = L.Dense(4, activation="tanh")
        self.dec = L.Dense(16, activation="sigmoid")
        self.layers = [self.enc, self.dec]

    @tf.function(input_signature=[tf.TensorSpec([1, 16], F32, name="x")])
    def encode(self, x):
        return {"code": self.enc(x)}

    @tf.function(input_signature=[tf.TensorSpec([1, 4], F32, name="code")])
    def decode(self, code):
        return {"x": self.dec(code) * 2.0 - 1.0}


class SparseModel(tf.Module):
    """1x8x8x16 -> Conv2D(32, 3x3) -> Dense(32): weights > 80 % zero in 1x4 blocks, kept sparse behind DENSIFY."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = L.Conv2D(32, 3, padding="same", activation="relu")
        self.dense = L.Dense(32)
        self.layers = [self.conv, self.dense]

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 16], F32, name="x")])
    def __call__(self, x):
        y = tf.reduce_mean(self.conv(x), axis=[1, 2])
        return {"y": self.dense(y)}

    def prune(self, rng: np.random.Generator) -> None:
        """Zero all but ~15 % of each kernel, in blocks of 4 along the input-channel axis."""
        for var in (self.conv.kernel, self.dense.kernel):
            w = var.numpy()  # Keras layout [..., in, out]; blocks of 4 input channels, TFLite's innermost axis
            shape = w.shape[:-2] + (w.shape[-2] // 4, w.shape[-1])
            keep = rng.random(shape) < 0.15
            var.assign(w * np.repeat(keep, 4, axis=-2))


# ---------------------------------------------------------------- conversion


def build(module: tf.Module, rng: np.random.Generator, *functions):
    """Build the Keras layers of `module` by calling its tf.functions (default `__call__`) eagerly on zeros,
    randomize their weights and return the first function's concrete function."""
    functions = functions or (module.__call__,)
    tf.config.run_functions_eagerly(True)  # create the variables outside any trace
    try:
        for fn in functions:
            fn(*[tf.zeros([d or 1 for d in spec.shape], spec.dtype) for spec in fn.input_signature])
    finally:
        tf.config.run_functions_eagerly(False)
    randomize(module.layers, rng)
    # tf.Module does not see Keras 3 variables; list the tf.Variables under them so the converter freezes them.
    module.tracked = [var.value for layer in module.layers for var in layer.weights]
    return functions[0].get_concrete_function()


def convert(module: tf.Module, concrete, **options) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    for key, value in options.items():
        setattr(converter, key, value)
    return converter.convert()


def representative(shapes: list[list[int]], seed: int, count: int = 20):
    def dataset():
        rng = np.random.default_rng(seed)
        for _ in range(count):
            yield [rng.normal(0.0, 1.0, shape).astype(np.float32) for shape in shapes]

    return dataset


def int8_options(shapes: list[list[int]]) -> dict:
    return {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "representative_dataset": representative(shapes, SEED + 1),
        "target_spec": _target_spec(supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS_INT8]),
        "inference_input_type": tf.int8,
        "inference_output_type": tf.int8,
    }


def _target_spec(**fields):
    spec = tf.lite.TargetSpec()
    for key, value in fields.items():
        setattr(spec, key, value)
    return spec


def make_signatures(rng: np.random.Generator) -> bytes:
    codec = Codec()
    build(codec, rng, codec.encode, codec.decode)
    with tempfile.TemporaryDirectory() as folder:
        tf.saved_model.save(codec, folder, signatures={"encode": codec.encode, "decode": codec.decode})
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=["encode", "decode"])
        return converter.convert()


def make_sparse(rng: np.random.Generator) -> bytes:
    model = SparseModel()
    concrete = build(model, rng)
    model.prune(rng)
    return convert(model, concrete, optimizations=[tf.lite.Optimize.EXPERIMENTAL_SPARSITY])


def make_lstm(rng: np.random.Generator) -> bytes:
    """1x6x5 sequence -> LSTM(8, return_sequences) -> 1x6x8, fused to UNIDIRECTIONAL_SEQUENCE_LSTM.

    Built with tf_keras (Keras 2): the converter only fuses LSTMs that carry Keras 2's `api_implements`
    marker; a Keras 3 LSTM converts to a WHILE loop of small ops.
    """
    inputs = tf_keras.Input((6, 5), batch_size=1, name="x")
    model = tf_keras.Model(inputs, tf_keras.layers.LSTM(8, return_sequences=True)(inputs))
    model.set_weights([rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def make_all() -> dict[str, bytes]:
    files = {}
    mobile = MobileBlock()
    concrete = build(mobile, np.random.default_rng(SEED))
    files["mobile_block_f32.tflite"] = convert(mobile, concrete)
    files["mobile_block_fp16.tflite"] = convert(
        mobile, concrete, optimizations=[tf.lite.Optimize.DEFAULT],
        target_spec=_target_spec(supported_types=[tf.float16]))
    files["mobile_block_int8.tflite"] = convert(mobile, concrete, **int8_options([[1, 32, 32, 3]]))
    dense = DenseNet()
    concrete = build(dense, np.random.default_rng(SEED + 2))
    files["dense_int8.tflite"] = convert(dense, concrete, **int8_options([[1, 16]]))
    ops = OpsModel()
    files["ops_f32.tflite"] = convert(ops, build(ops, np.random.default_rng(SEED + 3)))
    loop = WhileModel()
    files["while_f32.tflite"] = convert(loop, loop.__call__.get_concrete_function())
    branch = IfModel(np.random.default_rng(SEED + 4))
    files["if_f32.tflite"] = convert(branch, branch.__call__.get_concrete_function())
    files["signatures_f32.tflite"] = make_signatures(np.random.default_rng(SEED + 5))
    files["sparse_f32.tflite"] = make_sparse(np.random.default_rng(SEED + 6))
    files["lstm_f32.tflite"] = make_lstm(np.random.default_rng(SEED + 7))
    return files


# ---------------------------------------------------------------- checking

BUILTIN_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def builtin_ops(content: bytes) -> tuple[list[str], int, list[str]]:
    """Sorted builtin op names over all subgraphs, the subgraph count and the signature keys of a model."""
    model = schema.Model.GetRootAs(content, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        op_code = model.OperatorCodes(i)
        codes.append(max(op_code.BuiltinCode(), op_code.DeprecatedBuiltinCode()))
    names = set()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            names.add(BUILTIN_NAMES.get(codes[subgraph.Operators(o).OpcodeIndex()], "CUSTOM"))
    keys = [model.SignatureDefs(i).SignatureKey().decode() for i in range(model.SignatureDefsLength())]
    return sorted(names), model.SubgraphsLength(), keys


def documented_ops() -> dict[str, set[str]]:
    """The "ops:" lists of this module's docstring: {file name: builtin op names}."""
    table: dict[str, set[str]] = {}
    name, in_ops = "", False
    for line in __doc__.splitlines():
        words = line.split()
        if words and words[0].endswith(".tflite"):
            name, in_ops = words[0], False
            table[name] = set()
        elif name and words and words[0] == "ops:":
            in_ops = True
            table[name].update(words[1:])
        elif in_ops and words and all(word.isupper() for word in words):
            table[name].update(words)
        else:
            in_ops = False
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args()
    keras.utils.set_random_seed(SEED)
    files = make_all()
    expected = documented_ops()
    print(f"TensorFlow {tf.__version__}")
    wrong = []
    for name, content in files.items():
        ops, subgraphs, keys = builtin_ops(content)
        print(f"{name}: {len(content)} bytes, {subgraphs} subgraph(s), signatures {keys}\n    {' '.join(ops)}")
        if set(ops) != expected.get(name):
            missing, extra = sorted(expected.get(name, set()) - set(ops)), sorted(set(ops) - expected.get(name, set()))
            wrong.append(f"{name}: missing {missing}, unexpected {extra}")
    if wrong:
        print("error: the converted ops differ from the docstring's table; nothing written:", *wrong, sep="\n  ")
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (args.out / name).write_bytes(content)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
