"""Mutated .tflite files and what edgerun makes of them, shared by tests/converters/tflite/
test_fuzz.py and benchmarks/bench_fuzz.py --tflite.

Seeds are small models written with the test builder (float and int8 convolutions, pools,
element-wise and shape ops, a WHILE loop's subgraphs, a signature) and a real trained model
(mediapipe's hand_recrop). Mutations: bytes overwritten with interesting 32-bit values at
aligned offsets (where offsets, lengths, indices and dims live), random bytes, bit flips,
truncations. An outcome is "refused: <Error>" (an EdgerunError at load), "ran", "<Error> at
run", or "BUG: ..." for anything else: another exception type, or a hang (checked by the
callers).
"""

from __future__ import annotations

import importlib.util
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgerun.runtime import Interpreter
from edgerun.runtime.errors import EdgerunError
from tests.converters.tflite.builder import TFLiteBuilder

FUZZ_BUDGET = 64 << 20  # arena bytes a mutated model may ask for
MAX_FEED_ELEMENTS = 1 << 22  # inputs the harness itself will make (a mutated shape may declare terabytes)
_INTERESTING = [0, 1, -1, 2, 3, 7, 16, 255, 2**15, 2**31 - 1, -(2**31), 2**32 - 1]


def _float_seed() -> bytes:
    rng = np.random.default_rng(0)
    b = TFLiteBuilder()
    x = b.input("x", (1, 8, 8, 3), signature=(-1, 8, 8, 3))
    w = b.constant("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    y = b.tensor("conv", (1, 4, 4, 4))
    b.op("CONV_2D", [x, w, b.constant("b", np.zeros(4, np.float32))], [y], "Conv2DOptions",
         padding=0, stride_w=2, stride_h=2, fused_activation_function=3)
    dw = b.constant("dw", rng.standard_normal((1, 3, 3, 4)).astype(np.float32))
    z = b.tensor("dw_out", (1, 4, 4, 4))
    b.op("DEPTHWISE_CONV_2D", [y, dw, b.constant("db", np.ones(4, np.float32))], [z], "DepthwiseConv2DOptions",
         padding=0, stride_w=1, stride_h=1, depth_multiplier=1)
    s = b.tensor("sum", (1, 4, 4, 4))
    b.op("ADD", [y, z], [s], "AddOptions", fused_activation_function=1)
    p = b.tensor("pool", (1, 2, 2, 4))
    b.op("MAX_POOL_2D", [s], [p], "Pool2DOptions", padding=1, stride_w=2, stride_h=2, filter_width=2,
         filter_height=2)
    r = b.tensor("flat", (1, 16))
    b.op("RESHAPE", [p, b.constant("shape", np.array([-1, 16], np.int32))], [r], "ReshapeOptions")
    fc = b.tensor("fc", (1, 5))
    b.op("FULLY_CONNECTED", [r, b.constant("fw", rng.standard_normal((5, 16)).astype(np.float32)),
                             b.constant("fb", np.zeros(5, np.float32))], [fc], "FullyConnectedOptions")
    out = b.tensor("probs", (1, 5))
    b.op("SOFTMAX", [fc], [out], "SoftmaxOptions", beta=1.0)
    b.output(out)
    c = b.tensor("cat", (1, 4, 4, 8))
    b.op("CONCATENATION", [y, z], [c], "ConcatenationOptions", axis=3)
    m = b.tensor("mean", (1, 1, 1, 8))
    b.op("MEAN", [c, b.constant("axes", np.array([1, 2], np.int32))], [m], "ReducerOptions", keep_dims=True)
    b.output(m)
    b.signature("serving_default", {"image": x}, {"probs": out, "mean": m})
    return b.build()


def _int8_seed() -> bytes:
    rng = np.random.default_rng(1)
    b = TFLiteBuilder()
    x = b.input("x", (1, 6, 6, 2), "INT8", quant={"scale": 0.05, "zero_point": -3})
    w = b.constant("w", rng.integers(-127, 128, (3, 3, 3, 2)).astype(np.int8),
                   quant={"scale": [0.01, 0.02, 0.03], "zero_point": [0, 0, 0], "axis": 0})
    bias = b.constant("b", rng.integers(-100, 100, 3).astype(np.int32),
                      quant={"scale": [0.0005, 0.001, 0.0015], "zero_point": [0, 0, 0]})
    y = b.tensor("y", (1, 6, 6, 3), "INT8", quant={"scale": 0.1, "zero_point": 2})
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding=0, stride_w=1, stride_h=1)
    f = b.tensor("f", (1, 6, 6, 3))
    b.op("DEQUANTIZE", [y], [f])
    b.output(f)
    return b.build()


def _real_seed() -> bytes | None:
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "modules" / "holistic_landmark" / "hand_recrop.tflite"
    return path.read_bytes() if path.exists() else None


def seeds() -> list[bytes]:
    found = [_float_seed(), _int8_seed()]
    real = _real_seed()
    return found + ([real] if real is not None else [])


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if len(out) < 8:  # (truncated to almost nothing already)
            break
        kind = rng.randrange(4)
        if kind == 0:  # an interesting 32-bit value where offsets, lengths and dims live
            pos = rng.randrange(0, len(out) - 4) & ~3
            struct.pack_into("<I", out, pos, _INTERESTING[rng.randrange(len(_INTERESTING))] & 0xFFFFFFFF)
        elif kind == 1:
            pos = rng.randrange(len(out))
            out[pos:pos + 4] = bytes(rng.randrange(256) for _ in range(min(4, len(out) - pos)))
        elif kind == 2:
            pos = rng.randrange(len(out))
            out[pos] ^= 1 << rng.randrange(8)
        elif rng.random() < 0.3:
            out = out[:rng.randrange(len(out))]
    return bytes(out)


def mutated_models(count: int, seed: int = 0) -> Iterator[bytes]:
    rng = random.Random(seed)
    corpus = seeds()
    for _ in range(count):
        # The real model is large: mutate it less often, so a run stays quick.
        yield mutate(corpus[-1] if rng.random() < 0.1 else rng.choice(corpus[:2]), rng)


def outcome(data: bytes) -> str:
    """What loading `data` and running each signature on random inputs ends in."""
    try:
        it = Interpreter(data, device="cpu", memory_budget=FUZZ_BUDGET)
    except EdgerunError as exc:
        return f"refused: {type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - the point: anything else is a bug
        return f"BUG: {type(exc).__name__} at load: {exc}"
    rng = np.random.default_rng(0)
    try:
        for name, info in it.signatures.items():
            feeds = {}
            for key, spec in info.inputs.items():
                shape = [d if d >= 0 else 2 for d in spec.shape]
                if np.prod(shape, dtype=np.float64) > MAX_FEED_ELEMENTS:
                    return "loaded (an input too large to feed)"
                if spec.dtype.kind in "iu":
                    bounds = np.iinfo(spec.dtype)
                    feeds[key] = rng.integers(max(bounds.min, -100), min(bounds.max, 100), shape).astype(spec.dtype)
                elif spec.dtype.kind == "b":
                    feeds[key] = rng.random(shape) > 0.5
                else:
                    feeds[key] = rng.standard_normal(shape).astype(spec.dtype)
            it.run(feeds, signature=name)
    except EdgerunError as exc:
        return f"{type(exc).__name__} at run"
    except Exception as exc:  # noqa: BLE001
        return f"BUG: {type(exc).__name__} at run: {exc}"
    return "ran"
