"""(activations kernels: being written.)"""
