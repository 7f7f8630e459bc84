"""Image decoding: ImageDecoder (opset 20) turns encoded image bytes into pixels with Pillow.

The bytes are untrusted: only the formats ONNX lists are opened (BMP, JPEG, JPEG 2000, TIFF,
PNG, WebP and the PNM family; never one whose Pillow plugin runs an external program), an image
whose header declares more than MAX_IMAGE_BYTES bytes of pixels is refused before any pixel is
decoded (a decompression bomb), and whatever goes wrong while decoding is a ModelError naming
the node.
Pillow is an optional dependency (`pip install 'edgerun[image]'`), imported when a node runs.
"""

from __future__ import annotations

import io
from types import ModuleType
from typing import Any

import numpy as np

from edgerun.runtime.errors import MemoryBudgetError, ModelError
from edgerun.runtime.kernels.attrs import str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register

# The largest image ImageDecoder decodes, in bytes of pixels: width x height x the larger of the
# source's bytes per pixel (channels x bytes per channel, as its header declares: 3 for 8-bit
# RGB, 2 for 16-bit grayscale, 4 for RGBA, CMYK or 32-bit samples) and the output's (3 for RGB
# and BGR, 1 for Grayscale). 2**26 = 64 MiB: 22.3 million RGB pixels (a 24-megapixel 3:2 photo
# is 6000 x 4000 = 72 MB, too many; 4K UHD is 25 MB), 33.5 million 16-bit gray ones. Decoding
# holds a few such copies at once (Pillow's pixels, numpy's, the output), so its peak stays
# under about 400 MB. Within a plan whose context has a memory budget, an image of more bytes
# than the budget is a MemoryBudgetError before decoding (the plan checks only the output, after
# prepare has decoded it).
MAX_IMAGE_BYTES = 1 << 26

# Pillow plugin IDs of the formats the ONNX spec lists ("PPM" reads PBM, PGM, PPM and PNM).
FORMATS = ("BMP", "JPEG", "JPEG2000", "TIFF", "PNG", "WEBP", "PPM")

PIXEL_FORMATS = {"RGB": "RGB", "BGR": "RGB", "Grayscale": "L"}  # pixel_format -> Pillow mode
CHANNELS = {"RGB": 3, "BGR": 3, "Grayscale": 1}  # pixel_format -> output channels


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
    above, are truncated or corrupt, or declare more than MAX_IMAGE_BYTES of pixels (see
    there); a MemoryBudgetError for more than the plan's memory budget; and where Pillow
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
                self._check_size(image)
                pixels = self._pixels(image_module, image)
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

    def _pixels(self, image_module: ModuleType, image: Any) -> np.ndarray:
        """The opened `image` decoded and converted to the requested pixel format: (H, W) or
        (H, W, C) uint8. Intermediate images are closed as soon as the next one exists."""
        eight_bit = self._to_8bit(image_module, image)
        mode = PIXEL_FORMATS[self.pixel_format]
        converted = eight_bit if eight_bit.mode == mode else eight_bit.convert(mode)
        if eight_bit is not image and eight_bit is not converted:
            eight_bit.close()
        pixels = np.asarray(converted)
        if converted is not image:
            converted.close()
        return pixels

    def _to_8bit(self, image_module: ModuleType, image: Any) -> Any:  # a PIL.Image.Image
        """A 16-bit (or 32-bit int) grayscale image reduced to 8 bits by the high byte of its value
        clipped to [0, 65535], as OpenCV does (Pillow's own convert would clip at 255); a ModelError
        for float samples. Images of other modes as they are."""
        if image.mode == "F":
            raise self.fail("the image has float samples (mode F), which have no 8-bit form to decode to")
        if image.mode == "I" or image.mode.startswith("I;16"):
            samples = np.asarray(image)
            if samples.dtype.kind == "i":  # signed samples: clipped to [0, 65535] first
                samples = np.clip(samples, 0, 65535)
                np.right_shift(samples, 8, out=samples)
            else:
                samples = samples >> 8
            return image_module.fromarray(samples.astype(np.uint8))
        return image

    def _check_size(self, image: Any) -> None:
        """ModelError for an empty image or one of more than MAX_IMAGE_BYTES bytes of pixels (in
        its source mode or the output's, the larger), MemoryBudgetError for more than the plan's
        memory budget (when the context has one); from its header alone."""
        width, height = image.size
        if width <= 0 or height <= 0:
            raise self.fail(f"the image header declares an empty image ({width} x {height})")
        channels = len(image.getbands())
        per_channel = 2 if image.mode.startswith("I;16") else 4 if image.mode in ("I", "F") else 1
        per_pixel = max(channels * per_channel, CHANNELS[self.pixel_format])
        if width * height * per_pixel > MAX_IMAGE_BYTES:
            raise self.fail(f"the image header declares {width} x {height} pixels of {per_pixel} bytes (mode "
                            f"{image.mode}, output {self.pixel_format}) = {width * height * per_pixel} bytes, more "
                            f"than the {MAX_IMAGE_BYTES} ImageDecoder decodes")
        budget = getattr(self.context, "memory_budget", None)
        if budget is not None and width * height * per_pixel > budget:
            raise MemoryBudgetError(f"node {self.name!r} ({self.op_type}): the image header declares {width} x "
                                    f"{height} pixels of {per_pixel} bytes = {width * height * per_pixel} bytes, "
                                    f"over the memory budget of {budget}")
