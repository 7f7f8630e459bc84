"""Mutated-model generator and outcome classifier shared by the fuzz test and
benchmarks/bench_fuzz.py.

An outcome is "ModelError" / "UnsupportedOpError" (refused with a clear error),
"ran" (loaded and every signature ran), or "BUG: ..." for anything else:
another exception type, a wrong set of outputs.
"""

from __future__ import annotations

from collections.abc import Iterator

import ml_dtypes
import numpy as np

from edgerun.runtime import Interpreter, dtypes, serialize
from edgerun.runtime.errors import EdgerunError, ModelError, UnsupportedOpError
from edgerun.runtime.graph import Graph, GraphBuilder, ValueKind
from tests.runtime.graphs import add_relu_graph, feature_graph, mlp_graph
from tests.runtime.mutate import int_vectors, patch_vector, raw_model

FUZZ_BUDGET = 64 << 20  # arena bytes a mutated model may ask for
_INTERESTING = [0, 1, -1, -2, 2, 7, 255, 2**15, 2**31 - 1, -(2**31), 2**32 - 1, 2**40, 2**62]


def lowbit_graph() -> Graph:
    """y = x * float(w8) + float(w4): a float8 e4m3fn and an int4 constant (7 elements, so the
    packed int4 buffer ends in a half-used byte)."""
    g = GraphBuilder("lowbit", opset=21)
    x = g.input("x", np.float32, (-1, 7))
    w8 = g.constant("w8", np.linspace(-3, 3, 7, dtype=np.float32).astype(ml_dtypes.float8_e4m3fn))
    w4 = g.constant("w4", np.arange(-4, 3).astype(ml_dtypes.int4))
    scaled = g.op("Mul", [x, g.op("Cast", [w8], to=1, name="cast8")], name="mul")
    g.output(g.op("Add", [scaled, g.op("Cast", [w4], to=1, name="cast4")], name="add"), "y")
    return g.build()


def strings_graph() -> Graph:
    """String tensors: a string input joined with a string constant (length-prefixed UTF-8 in
    the file: empty, multi-byte and longer elements), matched, compared and parsed."""
    g = GraphBuilder("strings", opset=20)
    x = g.input("x", object, (-1, 1))
    words = g.constant("words", np.array(["x", "é€😀", "", "a longer element"], dtype=object))
    joined = g.op("StringConcat", [x, words], name="concat")
    g.output(joined, "joined")
    g.output(g.op("RegexFullMatch", [joined], pattern="x.*", name="regex"), "match")
    g.output(g.op("Equal", [joined, words], name="same"), "equal")
    numbers = g.constant("numbers", np.array([["1.5", "-2e3"], ["inf", " 7 "]], dtype=object))
    g.output(g.op("Cast", [numbers], to=1, name="parse"), "floats")
    return g.build()


def sequences_graph() -> Graph:
    """Sequence and optional values: a sequence input grown by a planned Relu's output (an
    eager tail), joined, counted and split again (a sequence output), and an optional."""
    g = GraphBuilder("sequences", opset=18)
    s = g.input("s", np.float32, (-1, 3), kind=ValueKind.SEQUENCE)
    x = g.input("x", np.float32, (-1, 3))
    relu = g.op("Relu", [x], name="relu")
    grown = g.op("SequenceInsert", [s, relu], name="insert")
    g.output(g.op("ConcatFromSequence", [grown], axis=0, name="concat"), "joined")
    g.output(g.op("SequenceLength", [grown], name="count"), "length")
    parts = g.op("SplitToSequence", [relu], axis=1, keepdims=0, name="split")
    parts.kind = ValueKind.SEQUENCE
    g.output(parts, "parts")
    g.output(g.op("OptionalHasElement", [g.op("Optional", [relu], name="wrap")], name="check"), "has")
    return g.build()


def maps_graph() -> Graph:
    """Sequences of maps: a planned Softmax's rows zipped with int64 labels and with string
    labels (ZipMap in the eager tail; outputs with a key type), beside a tensor output."""
    g = GraphBuilder("maps", opset=17)
    probs = g.op("Softmax", [g.input("x", np.float32, (-1, 3))], axis=1, name="softmax")
    by_id = g.op("ZipMap", [probs], name="zip_ids", domain="ai.onnx.ml", version=1, classlabels_int64s=[5, 1, 9])
    by_name = g.op("ZipMap", [probs], name="zip_names", domain="ai.onnx.ml", version=1,
                   classlabels_strings=["cat", "dög", ""])
    by_id.kind, by_id.key_dtype = ValueKind.SEQUENCE_MAP, np.dtype(np.int64)
    by_name.kind, by_name.key_dtype = ValueKind.SEQUENCE_MAP, dtypes.STRING
    g.output(by_id, "ids")
    g.output(by_name, "names")
    g.output(g.op("ArgMax", [probs], axis=1, name="argmax"), "label")
    return g.build()


def base_models() -> list[bytes]:
    """Serialized seeds: inline and external buffers, several ops, an unknown op, float8 and
    (packed) int4 constants, string constants and inputs, sequence and optional values,
    sequences of maps."""
    return [
        serialize(add_relu_graph()),
        serialize(mlp_graph((8, 6, 3)), inline_limit=0),
        serialize(mlp_graph((5, 4, 4, 2))),
        serialize(feature_graph(), inline_limit=64),
        serialize(lowbit_graph()),
        serialize(lowbit_graph(), inline_limit=0),
        serialize(strings_graph()),
        serialize(sequences_graph()),
        serialize(maps_graph()),
    ]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random mutation of `data` (kind chosen at random)."""
    kind = rng.integers(7)
    out = bytearray(data)
    if kind == 0:  # overwrite a few bytes
        for _ in range(rng.integers(1, 5)):
            out[rng.integers(len(out))] = rng.integers(256)
    elif kind == 1:  # flip one bit
        pos = rng.integers(len(out))
        out[pos] ^= 1 << rng.integers(8)
    elif kind == 2:  # truncate
        del out[rng.integers(len(out)) :]
    elif kind == 3:  # insert or delete a run of bytes
        pos, n = rng.integers(len(out)), int(rng.integers(1, 9))
        if rng.integers(2):
            out[pos:pos] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        else:
            del out[pos : pos + n]
    elif kind == 4:  # an interesting 32-bit value at an aligned position
        pos = int(rng.integers(len(out) // 4)) * 4
        value = int(rng.choice(_INTERESTING)) & 0xFFFFFFFF
        out[pos : pos + 4] = value.to_bytes(4, "little")
    else:  # index and shape vectors: out of range, cycles, huge dims
        return _mutate_vector(data, rng)
    return bytes(out)


def _mutate_vector(data: bytes, rng: np.random.Generator) -> bytes:
    raw = raw_model(data)
    vectors = int_vectors(raw)
    label, pick = vectors[rng.integers(len(vectors))]
    vector = pick(raw)
    n_tensors = len(raw["subgraphs"][0]["tensors"])
    candidates = [*_INTERESTING, n_tensors, n_tensors - 1, int(rng.integers(-1, n_tensors + 2))]
    value = int(rng.choice(candidates))
    info = np.iinfo(vector.dtype)
    value = min(max(value, info.min), info.max)
    return patch_vector(data, pick, int(rng.integers(len(vector))), value)


def mutated_models(count: int, seed: int) -> Iterator[bytes]:
    rng = np.random.default_rng(seed)
    seeds = base_models()
    for i in range(count):
        yield mutate(seeds[i % len(seeds)], rng)


def outcome(data: bytes) -> str:
    """What edgerun does with `data`; anything starting with "BUG" is a defect."""
    try:
        it = Interpreter(data, memory_budget=FUZZ_BUDGET)
    except UnsupportedOpError:
        return "UnsupportedOpError"
    except ModelError:
        return "ModelError"
    except Exception as exc:  # noqa: BLE001 - classifying is the point
        return f"BUG: {type(exc).__name__} at load: {exc}"
    rng = np.random.default_rng(0)
    for name, sig in it.signatures.items():
        feeds = {}
        for input_name, info in sig.inputs.items():
            shape = tuple(1 if d < 0 else d for d in info.shape)
            if int(np.prod(shape, dtype=np.float64)) * info.dtype.itemsize > FUZZ_BUDGET:
                return "loaded (input too large to run)"
            if dtypes.is_string(info.dtype):
                feeds[input_name] = np.full(shape, "x", dtype=object)
            else:
                feeds[input_name] = rng.standard_normal(shape).astype(info.dtype)
            if info.kind in (ValueKind.SEQUENCE, ValueKind.OPTIONAL_SEQUENCE):  # two elements
                feeds[input_name] = [feeds[input_name], feeds[input_name]]
        try:
            result = it.run(feeds, signature=name)
        except ModelError:
            return "ModelError at run"
        except EdgerunError as exc:
            return f"BUG: {type(exc).__name__} at run: {exc}"
        except Exception as exc:  # noqa: BLE001
            return f"BUG: {type(exc).__name__} at run: {exc}"
        if set(result) != set(sig.outputs):
            return f"BUG: signature {name!r} returned {sorted(result)}"
    return "ran"
