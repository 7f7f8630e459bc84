"""(cast kernels: being written.)"""
