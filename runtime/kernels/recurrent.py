"""(recurrent kernels: being written.)"""
