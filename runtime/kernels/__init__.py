"""numpy reference kernels, grouped by op family. Importing this package registers them."""

from edgerun.runtime.kernels import (  # noqa: F401  (registration side effects)
    activations,
    attention,
    cast,
    control,
    conv,
    elementwise,
    indexing,
    linalg,
    losses,
    nn,
    normalization,
    optimizers,
    pool,
    quantize,
    recurrent,
    reduce,
    resize,
    shape,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register, resolve, supported_ops

__all__ = ["Kernel", "TensorSpec", "register", "resolve", "supported_ops"]
