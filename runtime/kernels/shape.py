"""Shape kernels: Reshape, Flatten, Transpose, Concat, Identity."""
