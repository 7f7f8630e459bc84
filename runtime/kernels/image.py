"""Image decoding: ImageDecoder (opset 20) turns encoded image bytes into pixels with Pillow.

The bytes are untrusted: only the formats ONNX lists are opened (BMP, JPEG, JPEG 2000, TIFF,
PNG, WebP and the PNM family; never one whose Pillow plugin runs an external program), an image
whose header declares more than MAX_PIXELS pixels is refused before any pixel is decoded (a
decompression bomb), and whatever goes wrong while decoding is a ModelError naming the node.
Pillow is an optional dependency (`pip install 'edgerun[image]'`), imported when a node runs.
"""

from __future__ import annotations

import io
from types import ModuleType
from typing import Any

import numpy as np

from edgerun.runtime.errors import ModelError
from edgerun.runtime.kernels.attrs import str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register

# The largest image (width * height) ImageDecoder decodes: 2**25, about 33.5 million pixels, a
# little more than 8K UHD (7680 x 4320), or 100 MiB of RGB output. Stricter than Pillow's own
# bomb limit (Image.MAX_IMAGE_PIXELS, about 89 million, and an error only at twice that).
MAX_PIXELS = 1 << 25

# Pillow plugin IDs of the formats the ONNX spec lists ("PPM" reads PBM, PGM, PPM and PNM).
FORMATS = ("BMP", "JPEG", "JPEG2000", "TIFF", "PNG", "WEBP", "PPM")

PIXEL_FORMATS = {"RGB": "RGB", "BGR": "RGB", "Grayscale": "L"}  # pixel_format -> Pillow mode


def _pillow(kernel: Kernel) -> ModuleType:
    """PIL.Image, or a ModelError saying how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise kernel.fail("ImageDecoder needs Pillow: pip install 'edgerun[image]'") from None
    return Image


@register("ImageDecoder", since=20)
class ImageDecoder(Kernel):
    """(encoded_stream: 1-D uint8; pixel_format="RGB") -> image: uint8 of shape (H, W, C), C = 3
    for "RGB" and "BGR" (channels in that order) and 1 for "Grayscale" (Pillow's ITU-R 601-2
    luma, L = R * 299/1000 + G * 587/1000 + B * 114/1000). Any source mode (palette, alpha,
    CMYK, grayscale) is converted to the requested one, alpha dropped; 16-bit samples keep their
    high byte; of a multi-frame image, the first frame. EXIF orientation is not applied.

    The output shape depends on the bytes, so they are needed at prepare time (decoded there
    and kept for the run). Fails with a ModelError for bytes that are not one of the formats
    above, are truncated or corrupt, or declare more than MAX_PIXELS pixels; and where Pillow
    is not installed. (The ONNX spec returns an empty tensor for undecodable bytes; edgerun
    says why instead.)"""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        spec = inputs[0]
        if spec.dtype != np.uint8 or len(spec.shape) != 1:
            raise self.fail(f"encoded_stream: expected a 1-D uint8 tensor, got {spec.dtype} of shape {spec.shape}")
        self.pixel_format = str_attr(self, "pixel_format", "RGB")
        if self.pixel_format not in PIXEL_FORMATS:
            raise self.fail(f"attribute 'pixel_format' must be one of {', '.join(PIXEL_FORMATS)}, "
                            f"got {self.pixel_format!r}")
        self.encoded = self.value_of(values, 0).tobytes()
        self.pixels = self._decode(self.encoded)
        return [TensorSpec(self.pixels.dtype, self.pixels.shape)]

    def run(self, inputs, outputs):
        data = inputs[0].tobytes()
        image = self.pixels if data == self.encoded else self._decode(data)
        if image.shape != outputs[0].shape:
            raise self.fail(f"the image's shape {image.shape} changed since prepare ({outputs[0].shape})")
        np.copyto(outputs[0], image)

    def _decode(self, data: bytes) -> np.ndarray:
        """The pixels of `data` as (H, W, C) uint8; a ModelError for anything Pillow cannot decode."""
        image_module = _pillow(self)
        if not data:
            raise self.fail("encoded_stream is empty")
        try:
            with image_module.open(io.BytesIO(data), formats=FORMATS) as image:
                self._check_size(image.size)
                pixels = np.asarray(self._to_8bit(image_module, image).convert(PIXEL_FORMATS[self.pixel_format]))
        except ModelError:
            raise
        except image_module.UnidentifiedImageError:
            raise self.fail(f"encoded_stream is not an image in a supported format ({', '.join(FORMATS)})") from None
        except image_module.DecompressionBombError as exc:
            raise self.fail(f"image refused: {exc}") from None
        except Exception as exc:  # Pillow's plugins raise many kinds on corrupt bytes
            raise self.fail(f"cannot decode the image ({type(exc).__name__}: {exc})") from None
        if pixels.ndim == 2:
            pixels = pixels[:, :, np.newaxis]
        if self.pixel_format == "BGR":
            pixels = pixels[:, :, ::-1]
        return np.ascontiguousarray(pixels, dtype=np.uint8)

    def _to_8bit(self, image_module: ModuleType, image: Any) -> Any:  # a PIL.Image.Image
        """A 16-bit (or 32-bit int) grayscale image reduced to 8 bits by the high byte of its value
        clipped to [0, 65535], as OpenCV does (Pillow's own convert would clip at 255); a ModelError
        for float samples. Images of other modes as they are."""
        if image.mode == "F":
            raise self.fail("the image has float samples (mode F), which have no 8-bit form to decode to")
        if image.mode == "I" or image.mode.startswith("I;16"):
            samples = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
            return image_module.fromarray((samples >> 8).astype(np.uint8))
        return image

    def _check_size(self, size: tuple[int, int]) -> None:
        width, height = size
        if width <= 0 or height <= 0:
            raise self.fail(f"the image header declares an empty image ({width} x {height})")
        if width * height > MAX_PIXELS:
            raise self.fail(f"the image header declares {width} x {height} = {width * height} pixels, "
                            f"more than the {MAX_PIXELS} ImageDecoder decodes")
