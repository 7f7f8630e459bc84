"""(quantize kernels: being written.)"""
