"""(indexing kernels: being written.)"""
