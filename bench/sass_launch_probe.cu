// Launch facts of the kernels that take dynamic shared memory, printed from the kernels' own
// compile-time constants (host code only: it runs without a GPU). bench/sass_stats.py compiles and
// runs it so that its table reads the sizes the launchers pass instead of a second copy of the
// formulas. One JSON object per line. A tile config or head size missing here shows up in the
// table as "static only" / "n/a", never as a wrong number.
#include <cstdio>

#include "gdn/chunk_prefill_kernels.cuh"
#include "moe/w4a16_gemm_kernel.cuh"

namespace w4a16 = qwen35_trt::kernels::moe_detail::w4a16;
namespace gdn = qwen35_trt::kernels::gdn_chunk_impl;

template <class C, bool kSwiGLU, bool kFrag>
void print_w4a16() {
  using S = w4a16::Smem<C, kSwiGLU, kFrag>;
  std::printf(
      "{\"kernel\": \"w4a16_gemm_kernel\", \"bm\": %d, \"bn\": %d, \"wm\": %d, \"wn\": %d, \"stages\": %d, "
      "\"swiglu\": %s, \"fragments\": %s, \"threads\": %d, \"mi\": %d, \"ni\": %d, \"ops\": %d, \"bk\": %d, "
      "\"b_rows\": %d, \"dynamic_smem\": %d}\n",
      C::BM, C::BN, C::WM, C::WN, C::STAGES, kSwiGLU ? "true" : "false", kFrag ? "true" : "false",
      C::kThreads, C::MI, C::NI, kSwiGLU ? 2 : 1, w4a16::kBK, S::kBRows, S::kBytes);
}

template <class C>
void print_w4a16_both() {
  print_w4a16<C, false, false>();
  print_w4a16<C, true, false>();
  print_w4a16<C, false, true>();
  print_w4a16<C, true, true>();
}

template <int DK>
void print_gdn() {
  std::printf("{\"kernel\": \"gdn_chunk_transform_kernel\", \"dk\": %d, \"dynamic_smem\": %zu}\n", DK,
              gdn::TransformSmem<DK>::kBytes);
  std::printf("{\"kernel\": \"gdn_chunk_state_kernel\", \"dk\": %d, \"dynamic_smem\": %zu}\n", DK,
              gdn::StateSmem<DK>::kBytes);
  std::printf("{\"kernel\": \"gdn_chunk_output_kernel\", \"dk\": %d, \"dynamic_smem\": %zu}\n", DK,
              gdn::OutputSmem<DK>::kBytes);
}

int main() {
  print_w4a16_both<w4a16::SmallTile>();
  print_w4a16_both<w4a16::SmallPlainTile>();
  print_w4a16_both<w4a16::MediumTile>();
  print_w4a16_both<w4a16::LargeTile>();
  print_gdn<64>();
  print_gdn<128>();
  return 0;
}
