"""ImageDecoder: lossless formats decode exactly to the array Pillow encoded, JPEG within a stated
tolerance, every format as onnx's ReferenceEvaluator decodes it; bombs, bad graphs and a fuzz of
truncated and mutated bytes give only ModelErrors naming the node."""

from __future__ import annotations

import io
import struct
import sys
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from edgerun.converters.onnx_backend import EdgerunBackend
from edgerun.runtime.errors import MemoryBudgetError, ModelError
from edgerun.runtime.kernels import TensorSpec, resolve
from edgerun.runtime.kernels.image import MAX_IMAGE_BYTES

Image = pytest.importorskip("PIL.Image")


def encode(array, fmt, **options):
    """`array` (H, W[, C] uint8, or uint16 for 16-bit) encoded by Pillow as a 1-D uint8 tensor."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return np.frombuffer(buffer.getvalue(), np.uint8)


def decode(encoded, pixel_format=None, run_with=None):
    """resolve -> prepare (the bytes known, as the kernel needs) -> run with `run_with` (default:
    the same bytes) into a 77-filled output."""
    attrs = {} if pixel_format is None else {"pixel_format": pixel_format}
    kernel = resolve("", "ImageDecoder", 20, "n")("ImageDecoder", "n", attrs, 20)
    (spec,) = kernel.prepare([TensorSpec(encoded.dtype, encoded.shape)], [encoded])
    out = np.full(spec.shape, 77, spec.dtype)
    kernel.run([encoded if run_with is None else run_with], [out])
    return out


def model(pixel_format="RGB"):
    node = helper.make_node("ImageDecoder", ["x"], ["y"], pixel_format=pixel_format)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def random_image(height, width, channels=3, seed=0):
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def smooth_image(height=48, width=64):
    """Gradients: what JPEG is made for (noise would differ by up to 200 levels)."""
    yy, xx = np.mgrid[0:height, 0:width]
    channels = [xx * 255 // (width - 1), yy * 255 // (height - 1), (xx + yy) * 255 // (width + height - 2)]
    return np.stack(channels, -1).astype(np.uint8)


# --- decoded pixels ---------------------------------------------------------------------------

LOSSLESS = [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"}),
            ("WEBP", {"lossless": True}), ("PPM", {})]


@pytest.mark.parametrize("fmt, options", LOSSLESS)
@pytest.mark.parametrize("height, width", [(1, 1), (7, 13), (32, 20)])
def test_lossless_round_trip_is_exact(fmt, options, height, width):
    array = random_image(height, width)
    got = decode(encode(array, fmt, **options))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("fmt", ["PNG", "BMP"])
def test_bgr_reverses_the_channels(fmt):
    array = random_image(9, 5, seed=1)
    np.testing.assert_array_equal(decode(encode(array, fmt), "BGR"), array[:, :, ::-1])


def test_grayscale_is_itu_601_luma():
    array = random_image(11, 6, seed=2)
    got = decode(encode(array, "PNG"), "Grayscale")
    assert got.shape == (11, 6, 1)
    luma = array.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(got[:, :, 0] - luma).max() <= 1.0  # Pillow's fixed point rounds


def test_grayscale_source_decodes_to_any_pixel_format():
    gray = random_image(6, 8, channels=1, seed=3)
    encoded = encode(gray, "PNG")
    np.testing.assert_array_equal(decode(encoded, "Grayscale"), gray[:, :, None])
    np.testing.assert_array_equal(decode(encoded, "RGB"), np.repeat(gray[:, :, None], 3, axis=2))


def test_alpha_is_dropped_and_palettes_are_looked_up():
    rgba = random_image(5, 4, channels=4, seed=4)
    np.testing.assert_array_equal(decode(encode(rgba, "PNG")), rgba[:, :, :3])
    palette = random_image(1, 16, seed=5)[0]
    indices = np.random.default_rng(6).integers(0, 16, (5, 7), dtype=np.uint8)
    image = Image.new("P", (7, 5))
    image.putdata(indices.reshape(-1).tolist())
    image.putpalette(palette.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    np.testing.assert_array_equal(decode(np.frombuffer(buffer.getvalue(), np.uint8)), palette[indices])


def test_sixteen_bit_samples_keep_their_high_byte():
    deep = np.random.default_rng(7).integers(0, 65536, (4, 9), dtype=np.uint16)
    encoded = encode(deep, "PNG")
    np.testing.assert_array_equal(decode(encoded, "Grayscale"), (deep >> 8)[:, :, None].astype(np.uint8))


def test_jpeg_is_within_a_few_levels_of_what_was_encoded():
    """Stated tolerance: quality 95 without chroma subsampling, smooth content: no pixel off by
    more than 6 levels, 1.5 on average."""
    array = smooth_image()
    got = decode(encode(array, "JPEG", quality=95, subsampling=0)).astype(int)
    assert got.shape == array.shape
    error = np.abs(got - array)
    assert error.max() <= 6 and error.mean() <= 1.5, (error.max(), error.mean())


def test_multi_frame_tiff_decodes_its_first_frame():
    frames = [random_image(6, 5, seed=s) for s in (8, 9)]
    buffer = io.BytesIO()
    Image.fromarray(frames[0]).save(buffer, format="TIFF", save_all=True, append_images=[Image.fromarray(frames[1])])
    np.testing.assert_array_equal(decode(np.frombuffer(buffer.getvalue(), np.uint8)), frames[0])


@pytest.mark.parametrize("fmt, options", [("JPEG", {"quality": 80}), ("JPEG2000", {}), ("WEBP", {"quality": 70}),
                                          ("PNG", {}), ("TIFF", {})])
@pytest.mark.parametrize("pixel_format", ["RGB", "BGR", "Grayscale"])
def test_matches_reference_evaluator(fmt, options, pixel_format):
    encoded = encode(smooth_image(20, 30), fmt, **options)
    want = ReferenceEvaluator(model(pixel_format)).run(None, {"x": encoded})[0]
    np.testing.assert_array_equal(decode(encoded, pixel_format), want)


def test_backend_decodes_images_of_different_sizes_in_turn():
    rep = EdgerunBackend.prepare(model("BGR"))
    for height, width in [(3, 4), (8, 2)]:
        array = random_image(height, width, seed=height)
        (got,) = rep.run([encode(array, "PNG")])
        np.testing.assert_array_equal(got, array[:, :, ::-1])


def test_run_decodes_bytes_that_differ_from_the_prepared_ones():
    first, second = random_image(4, 4, seed=10), random_image(4, 4, seed=11)
    np.testing.assert_array_equal(decode(encode(first, "BMP"), run_with=encode(second, "BMP")), second)
    with pytest.raises(ModelError, match=r"the image's shape \(5, 4, 3\) changed since prepare \(\(4, 4, 3\)\)"):
        decode(encode(first, "BMP"), run_with=encode(random_image(5, 4), "BMP"))


# --- untrusted bytes --------------------------------------------------------------------------


def png(width, height, rows=b"", color_type=2):
    """A PNG whose header declares width x height 8-bit pixels, with `rows` (filter bytes
    included) deflated as its only IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows or b"\0" * 8, 9)) + chunk(b"IEND", b"")
    return np.frombuffer(b"\x89PNG\r\n\x1a\n" + body, np.uint8)


def test_a_decompression_bomb_is_refused_before_decoding():
    """36 million gray pixels in 36 KB: refused by its header, not by running out of data."""
    side = 6000
    bomb = png(side, side, b"\0" * ((side + 1) * side), color_type=0)
    assert bomb.size < 100_000 and side * side > MAX_IMAGE_BYTES // 3
    with pytest.raises(ModelError, match=r"declares 6000 x 6000 pixels of 3 bytes \(mode L, output RGB\) = "
                                         f"108000000 bytes, more than the {MAX_IMAGE_BYTES}"):
        decode(bomb)


def _blank(mode, width, height, fmt="PNG"):
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format=fmt)
    return np.frombuffer(buffer.getvalue(), np.uint8)


@pytest.mark.parametrize("mode, side, pixel_format, per_pixel", [
    ("I;16", 5800, "Grayscale", 2),  # 16-bit samples: twice the bytes of 8-bit gray
    ("RGBA", 4100, "Grayscale", 4),  # four channels, though one comes out
    ("L", 4800, "RGB", 3),  # one channel, three come out
])
def test_the_limit_counts_bytes_of_the_source_or_output_whichever_is_larger(mode, side, pixel_format, per_pixel):
    # each just over the limit in bytes, though under the former limit of 2**25 pixels,
    # which counted neither bit depth nor channels
    assert side * side <= MAX_IMAGE_BYTES // per_pixel * 1.1 and side * side * per_pixel > MAX_IMAGE_BYTES
    with pytest.raises(ModelError, match=f"declares {side} x {side} pixels of {per_pixel} bytes \\(mode {mode}, "
                                         f"output {pixel_format}\\) = {side * side * per_pixel} bytes, more than"):
        decode(_blank(mode, side, side), pixel_format)


def test_an_image_over_the_plans_memory_budget_is_refused_before_decoding():
    kernel = resolve("", "ImageDecoder", 20, "n")("ImageDecoder", "n", {"pixel_format": "Grayscale"}, 20)
    kernel.context = SimpleNamespace(backend="cpu", work_budget=None, num_threads=None, memory_budget=1 << 20)
    encoded = _blank("I;16", 1000, 600)  # 1.2 MB of 16-bit samples, a 0.6 MB output
    message = r"node 'n' \(ImageDecoder\): the image header declares 1000 x 600 pixels of 2 bytes = 1200000 bytes, over"
    with pytest.raises(MemoryBudgetError, match=message + " the memory budget of 1048576"):
        kernel.prepare([TensorSpec(encoded.dtype, encoded.shape)], [encoded])
    kernel.context.memory_budget = 1_200_000
    (spec,) = kernel.prepare([TensorSpec(encoded.dtype, encoded.shape)], [encoded])
    assert spec.shape == (600, 1000, 1)


def test_an_image_just_within_the_byte_limit_decodes():
    side = 4096  # 4096 x 4096 x 4 bytes (RGBA) is exactly MAX_IMAGE_BYTES
    assert side * side * 4 == MAX_IMAGE_BYTES
    image = decode(_blank("RGBA", side, side), "Grayscale")
    assert image.shape == (side, side, 1) and not image.any()


def test_a_huge_header_is_refused_without_its_pixels():
    with pytest.raises(ModelError, match="node 'n' \\(ImageDecoder\\): the image header declares 40000 x 1000"):
        decode(png(40_000, 1_000))
    with pytest.raises(ModelError, match="image refused: .*decompression bomb"):
        decode(png(100_000, 100_000))  # past Pillow's own limit, which refuses it first


@pytest.mark.parametrize("data, message", [
    (b"", "encoded_stream is empty"),
    (b"this is not an image at all", "encoded_stream is not an image in a supported format (BMP, JPEG"),
    (encode(random_image(3, 3), "GIF").tobytes(), "encoded_stream is not an image in a supported format"),
    (encode(random_image(8, 8), "PNG").tobytes()[:60], "cannot decode the image"),
    (encode(np.ones((3, 3), np.float32), "TIFF").tobytes(), "the image has float samples (mode F)"),
])
def test_undecodable_bytes_are_a_model_error(data, message):
    with pytest.raises(ModelError, match="node 'n' \\(ImageDecoder\\)") as info:
        decode(np.frombuffer(data, np.uint8))
    assert message in str(info.value)


@pytest.mark.parametrize("encoded, attrs, message", [
    (np.zeros(8, np.int8), {}, "encoded_stream: expected a 1-D uint8 tensor, got int8 of shape (8,)"),
    (np.zeros((2, 4), np.uint8), {}, "encoded_stream: expected a 1-D uint8 tensor, got uint8 of shape (2, 4)"),
    (np.zeros(8, np.uint8), {"pixel_format": "RGBA"},
     "attribute 'pixel_format' must be one of RGB, BGR, Grayscale, got 'RGBA'"),
])
def test_bad_graph_is_a_model_error(encoded, attrs, message):
    kernel = resolve("", "ImageDecoder", 20, "n")("ImageDecoder", "n", attrs, 20)
    with pytest.raises(ModelError) as info:
        kernel.prepare([TensorSpec(encoded.dtype, encoded.shape)], [encoded])
    assert message in str(info.value)


def test_missing_pillow_says_how_to_install_it(monkeypatch):
    encoded = encode(random_image(2, 2), "PNG")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ModelError, match=r"ImageDecoder needs Pillow: pip install 'edgerun\[image\]'"):
        decode(encoded)


FUZZ_SOURCES = [("PNG", {}), ("BMP", {}), ("JPEG", {"quality": 90}), ("TIFF", {}),
                ("TIFF", {"compression": "tiff_lzw"}), ("WEBP", {}), ("WEBP", {"lossless": True}), ("PPM", {}),
                ("JPEG2000", {})]


def mutations(data, rng, count):
    """Truncations, byte flips and byte runs overwritten or inserted, `count` in all."""
    for _ in range(count):
        kind, raw = rng.integers(4), bytearray(data)
        at = int(rng.integers(len(raw)))
        if kind == 0:
            yield bytes(raw[:at])
        elif kind == 1:
            for i in rng.integers(0, len(raw), int(rng.integers(1, 9))):
                raw[i] ^= 1 << int(rng.integers(8))
            yield bytes(raw)
        elif kind == 2:
            run = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
            yield bytes(raw[:at] + run + raw[at + len(run):])
        else:
            yield bytes(raw[:at] + bytes([int(rng.integers(256))]) * int(rng.integers(1, 64)) + raw[at:])


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's "Truncated File Read" and the like
@pytest.mark.parametrize("fmt, options", FUZZ_SOURCES)
def test_fuzzed_bytes_decode_or_give_a_model_error(fmt, options):
    source = encode(random_image(12, 16, seed=12), fmt, **options).tobytes()
    rng = np.random.default_rng(sum(source[:64]) + len(source))
    refused = 0
    for data in mutations(source, rng, 80):
        for pixel_format in ("RGB", "Grayscale"):
            try:
                got = decode(np.frombuffer(data, np.uint8), pixel_format)
            except ModelError as exc:
                assert str(exc).startswith("node 'n' (ImageDecoder): "), str(exc)
                refused += 1
                continue
            assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == (3 if pixel_format == "RGB" else 1)
            assert got.size <= MAX_IMAGE_BYTES
    assert refused > 0  # the fuzz did reach the error paths
