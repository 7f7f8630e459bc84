"""(resize kernels: being written.)"""
