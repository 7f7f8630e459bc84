"""(placeholder: kernels being written)."""
