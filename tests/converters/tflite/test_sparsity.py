"""Sparse constants and DENSIFY: CSR and block-sparse encodings written with the test builder
and densified by LiteRT running the same file; mediapipe's sparse weights against LiteRT's
own densification; malformed sparsity parameters refused with the tensor's name."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgerun.converters.tflite.ops.elementwise  # noqa: F401
import edgerun.converters.tflite.ops.quantized  # noqa: F401
import edgerun.converters.tflite.sparsity  # noqa: F401
from edgerun import Interpreter
from edgerun.converters.tflite import from_tflite, read_tflite
from edgerun.converters.tflite.reader import TFLiteTensor
from edgerun.converters.tflite.sparsity import MAX_DENSE_ELEMENTS, densify
from edgerun.runtime.errors import ConversionError, ModelError
from tests.converters.tflite.builder import TFLiteBuilder, litert_run

MEDIAPIPE = Path(importlib.util.find_spec("mediapipe").submodule_search_locations[0]) / "modules"
TYPES = {"float32": "FLOAT32", "float16": "FLOAT16", "int8": "INT8"}


def encode(dense: np.ndarray, order, formats, block_map=(), block_sizes=(), index_dtype=np.int32):
    """TFLite's DenseToSparse, written out plainly: (builder sparsity dict, stored values).
    A sparse level keeps an index when anything below it is non-zero."""
    rank = dense.ndim
    shape, axis = [], {}
    for d in range(rank):
        axis[d] = len(shape)
        if d in block_map:
            size = block_sizes[block_map.index(d)]
            shape += [dense.shape[d] // size, size]
            axis[rank + block_map.index(d)] = len(shape) - 1
        else:
            shape.append(dense.shape[d])
    levels = dense.reshape(shape).transpose([axis[e] for e in order])
    meta, prefixes = [], [()]
    for level, fmt in enumerate(formats):
        size = levels.shape[level]
        if fmt == 0:
            meta.append({"format": 0, "dense_size": size})
            prefixes = [p + (i,) for p in prefixes for i in range(size)]
            continue
        segments, indices, kept = [0], [], []
        for p in prefixes:
            for i in range(size):
                if np.any(levels[p + (i,)] != 0):
                    indices.append(i)
                    kept.append(p + (i,))
            segments.append(len(indices))
        meta.append({"format": 1, "segments": np.array(segments, index_dtype),
                     "indices": np.array(indices, index_dtype)})
        prefixes = kept
    sparsity: dict[str, Any] = {"traversal_order": list(order), "dim_metadata": meta}
    if block_map:
        sparsity["block_map"] = list(block_map)
    return sparsity, np.array([levels[p] for p in prefixes], dense.dtype)


def sparse_weight(shape, dtype="float32", density=0.3, seed=0, block=None) -> np.ndarray:
    """A random array with zeros; `block` (bh, bw): zero or non-zero by whole blocks."""
    rng = np.random.default_rng(seed)
    if dtype == "int8":
        dense = rng.integers(-127, 128, shape).astype(np.int8)
    else:
        dense = rng.standard_normal(shape).astype(dtype)
    if block is None:
        mask = rng.random(shape) < density
    else:
        coarse = rng.random((shape[0] // block[0], shape[1] // block[1])) < density
        mask = np.kron(coarse, np.ones(block, bool))
    return np.where(mask, dense, np.zeros((), dense.dtype))


def densify_model(dense: np.ndarray, sparsity: dict, values: np.ndarray) -> bytes:
    b = TFLiteBuilder()
    kind = TYPES[dense.dtype.name]
    s = b.tensor("w_sparse", dense.shape, kind, data=values.tobytes(), sparsity=sparsity)
    y = b.tensor("w", dense.shape, kind)
    b.op("DENSIFY", [s], [y])
    b.output(y)
    return b.build()


ENCODINGS = {
    "csr": dict(order=(0, 1), formats=(0, 1)),
    "csr_column_major": dict(order=(1, 0), formats=(0, 1)),
    "both_sparse": dict(order=(0, 1), formats=(1, 1)),
    "dense_rows_only": dict(order=(0, 1), formats=(0, 0)),
    "block_4x1": dict(order=(0, 1, 2), formats=(0, 1, 0), block_map=(0,), block_sizes=(4,)),
    "block_1x4": dict(order=(0, 1, 2), formats=(0, 1, 0), block_map=(1,), block_sizes=(4,)),
    "block_2x2": dict(order=(0, 1, 2, 3), formats=(0, 1, 0, 0), block_map=(0, 1), block_sizes=(2, 2)),
    "block_2x2_swapped": dict(order=(1, 0, 3, 2), formats=(0, 1, 0, 0), block_map=(0, 1), block_sizes=(2, 2)),
}


@pytest.mark.parametrize("index_dtype", [np.int32, np.uint16, np.uint8], ids=["i32", "u16", "u8"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_densify_matches_litert(encoding, dtype, index_dtype):
    kwargs = dict(ENCODINGS[encoding])
    block = (kwargs["block_sizes"][0], 1) if encoding == "block_4x1" else None
    dense = sparse_weight((8, 12), dtype, block=block)
    sparsity, values = encode(dense, **kwargs, index_dtype=index_dtype)
    data = densify_model(dense, sparsity, values)
    want = litert_run(data, [], reference=True)[0]
    got = Interpreter(from_tflite(data)).run({})["w"]
    assert got.dtype == want.dtype == dense.dtype
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, dense)


def test_densify_of_a_4d_convolution_filter():
    dense = sparse_weight((6, 3, 3, 5), seed=3)
    sparsity, values = encode(dense, (0, 1, 2, 3), (0, 0, 0, 1))
    data = densify_model(dense, sparsity, values)
    np.testing.assert_array_equal(Interpreter(from_tflite(data)).run({})["w"], litert_run(data, [], reference=True)[0])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_densified_weights_feed_the_graph(dtype):
    """DENSIFY (-> DEQUANTIZE for float16) -> ADD with the input, as converters emit it."""
    dense = sparse_weight((8, 4), dtype, block=(4, 1), seed=5)
    sparsity, values = encode(dense, (0, 1, 2), (0, 1, 0), (0,), (4,))
    b = TFLiteBuilder()
    x = b.input("x", (8, 4))
    s = b.tensor("w_sparse", dense.shape, TYPES[dtype], data=values.tobytes(), sparsity=sparsity)
    w = b.tensor("w_dense", dense.shape, TYPES[dtype])
    b.op("DENSIFY", [s], [w])
    if dtype == "float16":
        w32 = b.tensor("w32", dense.shape)
        b.op("DEQUANTIZE", [w], [w32])
        w = w32
    y = b.tensor("y", (8, 4))
    b.op("ADD", [x, w], [y], "AddOptions")
    b.output(y)
    data = b.build()
    xv = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    got = Interpreter(from_tflite(data)).run({"x": xv})["y"]
    np.testing.assert_allclose(got, litert_run(data, [xv])[0], rtol=1e-6)
    np.testing.assert_allclose(got, xv + dense.astype(np.float32), rtol=1e-6)
    assert "DENSIFY" not in str(from_tflite(data).op_histogram())


@pytest.mark.parametrize("name, count", [("pose_detection/pose_detection", 38),
                                         ("face_detection/face_detection_full_range_sparse", 46)])
def test_mediapipe_sparse_weights_densify_as_litert_does(name, count):
    from ai_edge_litert.interpreter import Interpreter as LiteRT
    from ai_edge_litert.interpreter import OpResolverType

    path = MEDIAPIPE / f"{name}.tflite"
    graph = read_tflite(path).subgraphs[0]
    it = LiteRT(model_path=str(path), experimental_preserve_all_tensors=True,
                experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    (detail,) = it.get_input_details()
    it.set_tensor(detail["index"], np.zeros(detail["shape"], np.float32))
    it.invoke()
    ops = [op for op in graph.operators if op.opcode == "DENSIFY"]
    assert len(ops) == count
    for op in ops:
        ours = densify(graph.tensors[op.inputs[0]])
        want = it.get_tensor(op.outputs[0])
        assert ours.dtype == want.dtype and ours.shape == want.shape
        np.testing.assert_array_equal(ours, want)


# --- malformed sparsity ------------------------------------------------------------------


def tensor(shape=(4, 6), type="FLOAT32", order=(0, 1), block_map=None, dims=None, raw=None) -> TFLiteTensor:
    """A sparse TFLiteTensor as the reader makes it; by default 4x6 CSR with 5 values."""
    if dims is None:
        dims = [meta(0, 4), meta(1, segments=[0, 2, 2, 3, 5], indices=[0, 5, 2, 1, 3])]
    sparsity = {"traversal_order": np.array(order, np.int32),
                "block_map": None if block_map is None else np.array(block_map, np.int32), "dim_metadata": dims}
    raw = np.arange(1, 6, dtype=np.float32).tobytes() if raw is None else raw
    return TFLiteTensor(7, "w_sparse", type, tuple(shape), tuple(shape), sparsity=sparsity, raw=raw)


def meta(fmt: int, dense_size: int = 0, segments=None, indices=None) -> dict[str, Any]:
    def vector(values):
        return None if values is None else {"values": np.array(values, np.int32)}

    return {"format": fmt, "dense_size": dense_size, "array_segments_type": 1, "array_segments": vector(segments),
            "array_indices_type": 1, "array_indices": vector(indices)}


def test_the_default_malformed_tensor_base_is_valid():
    dense = densify(tensor())
    want = np.zeros((4, 6), np.float32)
    want[0, 0], want[0, 5], want[2, 2], want[3, 1], want[3, 3] = 1, 2, 3, 4, 5
    np.testing.assert_array_equal(dense, want)


@pytest.mark.parametrize("kwargs, message", [
    ({"order": (0, 0)}, "traversal_order [0, 0] is not a permutation"),
    ({"order": (0, 1, 2)}, "needs 2 entries in traversal_order and dim_metadata, got 3 and 2"),
    ({"dims": [meta(0, 4)]}, "got 2 and 1"),
    ({"dims": [meta(0, 5), meta(0, 6)], "raw": bytes(120)}, "dense level 0 has size 5, but the shape makes it 4"),
    ({"dims": [meta(0, 4), meta(1, segments=[0, 2, 3, 5], indices=[0, 5, 2, 1, 3])]},
     "sparse level 1 has 4 segment entries, the level above has 4 positions (needs 5)"),
    ({"dims": [meta(0, 4), meta(1, segments=[1, 2, 2, 3, 5], indices=[0, 5, 2, 1, 3])]},
     "segments must start at 0, never decrease and end at the 5 indices"),
    ({"dims": [meta(0, 4), meta(1, segments=[0, 3, 2, 3, 5], indices=[0, 5, 2, 1, 3])]}, "never decrease"),
    ({"dims": [meta(0, 4), meta(1, segments=[0, 2, 2, 3, 4], indices=[0, 5, 2, 1, 3])]}, "end at the 5 indices"),
    ({"dims": [meta(0, 4), meta(1, segments=[0, 2, 2, 3, 5], indices=[0, 6, 2, 1, 3])]},
     "sparse level 1 has an index outside 0..5"),
    ({"dims": [meta(0, 4), meta(1, segments=[0, 2, 2, 3, 5], indices=[0, -1, 2, 1, 3])]}, "an index outside"),
    ({"dims": [meta(0, 4), meta(1, segments=[0, 2, 2, 3, 5], indices=[5, 5, 2, 1, 3])]},
     "two stored values land on the same element"),
    ({"dims": [meta(0, 4), meta(1, segments=[0, 2, 2, 3, 5])]}, "sparse level 1 has no array_indices"),
    ({"raw": np.zeros(4, np.float32).tobytes()}, "the sparsity parameters place 5 values, the buffer holds 4"),
    ({"raw": bytes(21)}, "21 bytes of values are not a whole number of FLOAT32 elements"),
    ({"type": "STRING"}, "sparse tensors of type STRING are not supported"),
    ({"shape": (1 << 14, 1 << 13)}, f"over the limit of {MAX_DENSE_ELEMENTS:,}"),
    ({"block_map": (2,), "order": (0, 1, 2), "dims": [meta(0, 4), meta(0, 6), meta(0, 2)]},
     "block_map [2] must name distinct dimensions"),
    ({"block_map": (1,), "order": (0, 1, 2), "dims": [meta(0, 4), meta(0, 1), meta(0, 4)]},
     "block dimension 0 must be DENSE with a size dividing dimension 1 (6), got size 4"),
    ({"block_map": (1,), "order": (0, 1, 2), "dims": [meta(0, 4), meta(0, 3), meta(1, 2, [0], [])]},
     "block dimension 0 must be DENSE"),
    ({"dims": [None, meta(0, 6)]}, "dim_metadata 0 is missing or has an unknown format"),
    ({"dims": [meta(3, 4), meta(0, 6)]}, "dim_metadata 0 is missing or has an unknown format"),
])
def test_malformed_sparsity_is_a_model_error(kwargs, message):
    with pytest.raises(ModelError, match="sparse tensor 'w_sparse'") as info:
        densify(tensor(**kwargs))
    assert message in str(info.value)


def test_a_malformed_sparse_tensor_in_a_file_is_refused():
    dense = sparse_weight((8, 12))
    sparsity, values = encode(dense, (0, 1), (0, 1))
    sparsity["dim_metadata"][1]["indices"][0] = 40
    with pytest.raises(ModelError, match="sparse tensor 'w_sparse': sparse level 1 has an index outside 0..11"):
        from_tflite(densify_model(dense, sparsity, values))


def test_densify_needs_a_sparse_input_and_a_matching_output():
    b = TFLiteBuilder()
    w = b.constant("w", np.ones((2, 2), np.float32))
    y = b.tensor("y", (2, 2))
    b.op("DENSIFY", [w], [y])
    b.output(y)
    with pytest.raises(ConversionError, match="DENSIFY.*the input must be a sparse constant tensor"):
        from_tflite(b.build())
    dense = sparse_weight((8, 12))
    sparsity, values = encode(dense, (0, 1), (0, 1))
    b = TFLiteBuilder()
    s = b.tensor("w_sparse", dense.shape, data=values.tobytes(), sparsity=sparsity)
    y = b.tensor("y", (12, 8))
    b.op("DENSIFY", [s], [y])
    b.output(y)
    with pytest.raises(ConversionError, match=r"the output \(FLOAT32 \[12, 8\]\) must have the sparse input's type"):
        from_tflite(b.build())
