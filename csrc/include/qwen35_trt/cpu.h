// CPU execution settings of the C++ reference: which instruction set the NVFP4 GEMM kernels use
// and how many threads they split their output rows over.
//
// Neither setting changes a result: every output element is computed by one thread, in the
// fixed summation order of the reference (moe.h), whatever the ISA or the thread count.
//
// ISA: chosen once from the CPU (AVX-512 when __builtin_cpu_supports("avx512f"), else AVX2 when
// "avx2", else portable C++); the environment variable QWEN35_CPU_ISA=portable|avx2|avx512
// forces one (read at first use; asking for an ISA the CPU lacks throws std::invalid_argument).
// set_isa() overrides both.
//
// Threads: a small persistent pool (std::thread), 1 thread until set_num_threads() says
// otherwise; small calls run on the caller's thread alone.
#pragma once

#include <cstddef>
#include <functional>

namespace qwen35_trt::cpu {

enum class Isa : int { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

const char* isa_name(Isa isa);        // "portable", "avx2" or "avx512"
bool isa_supported(Isa isa);          // whether this CPU (and build) can run it
Isa isa();                            // the ISA the kernels use now
void set_isa(Isa isa);                // throws std::invalid_argument when !isa_supported(isa)
Isa parse_isa(const char* name);      // "portable" | "avx2" | "avx512"; throws std::invalid_argument

void set_num_threads(std::size_t n);  // n >= 1 (throws std::invalid_argument on 0)
std::size_t num_threads();

// Runs fn(0) .. fn(tasks - 1), each exactly once, over the pool (the calling thread takes part);
// returns when all are done and rethrows the first exception a task threw. A call made while
// the pool is busy (from a task, or from another thread) runs its tasks on the caller alone.
void parallel_for(std::size_t tasks, const std::function<void(std::size_t)>& fn);

}  // namespace qwen35_trt::cpu
