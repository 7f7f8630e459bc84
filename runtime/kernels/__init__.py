"""numpy reference kernels, grouped by op family. Importing this package registers them."""

from edgerun.runtime.kernels import (  # noqa: F401  (registration side effects)
    activations,
    arithmetic,
    attention,
    batch_norm,
    bitwise,
    cast,
    concat,
    control,
    conv,
    conv_transpose,
    conv_variants,
    detection,
    dropout,
    generators,
    global_pool,
    grid,
    indexing,
    linalg,
    logical,
    losses,
    ml,
    normalization,
    optimizers,
    pad,
    pool,
    quantize,
    recurrent,
    reduce,
    resize,
    shape,
    signal,
    softmax,
    sort,
    transpose,
    unary_math,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register, resolve, supported_ops

__all__ = ["Kernel", "TensorSpec", "register", "resolve", "supported_ops"]
