"""(control kernels: being written.)"""
