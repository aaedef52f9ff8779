// QWEN35_HD marks scalar functions that the CPU reference and the CUDA kernels share: host and
// device code under nvcc, plain inline functions in host-only C++ (the reference, the ctest
// executables, the CPU-emulated kernel sources).
#pragma once

#if defined(__CUDACC__)
#define QWEN35_HD __host__ __device__ __forceinline__
#else
#define QWEN35_HD inline
#endif
