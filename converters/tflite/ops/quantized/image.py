"""Quantized resizing: RESIZE_BILINEAR (int8 in TFLite's 10-bit fixed point, uint8 in float32,
as its reference kernels do).
"""

from __future__ import annotations

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.ops.quantized.common import emit, same_quantization, same_type
from edgerun.converters.tflite.registry import converts


@converts("RESIZE_BILINEAR", quantized=True)
def resize_bilinear(ctx: OpContext) -> None:
    """Quantized RESIZE_BILINEAR (align_corners, half_pixel_centers; the size may be computed
    at run time): int8 in TFLite's 10-bit fixed point, uint8 in float32, as its reference
    kernels do. Input and output must share their quantization (TFLite does not rescale)."""
    ctx.need_inputs(2)
    same_type(ctx, ctx.tensor(0), ctx.output_tensor(0))
    if len(ctx.tensor(0).shape) != 4:
        raise ctx.fail(f"expects a 4-D NHWC input, got {list(ctx.tensor(0).shape)}")
    same_quantization(ctx, "RESIZE_BILINEAR")
    align, half = bool(ctx.options.get("align_corners")), bool(ctx.options.get("half_pixel_centers"))
    if align and half:
        raise ctx.fail("align_corners and half_pixel_centers cannot both be set")
    ctx.bind(0, emit(ctx, "ResizeBilinear", [ctx.input(0), ctx.input(1)], align_corners=int(align),
                     half_pixel_centers=int(half)))
