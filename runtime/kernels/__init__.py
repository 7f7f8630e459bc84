"""numpy reference kernels, grouped by op family. Importing this package registers them."""

from runtime.kernels import conv, elementwise, nn, normalization, pool, shape  # noqa: F401  (registration side effects)
from runtime.kernels.base import Kernel, TensorSpec
from runtime.kernels.registry import register, resolve, supported_ops

__all__ = ["Kernel", "TensorSpec", "register", "resolve", "supported_ops"]
