"""edgerun runtime: the .erm format, IR, loader/verifier, interpreter and kernels."""
