"""(reduce kernels: being written.)"""
