"""(linalg kernels: being written.)"""
