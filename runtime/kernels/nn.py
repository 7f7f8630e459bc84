"""Neural-network kernels: Conv, pooling, Gemm/MatMul, normalization, Softmax."""
