// Workspace alignment, shared by the plugins whose kernels take a workspace: TensorRT promises
// less alignment than the launchers want (256 bytes for GDN's chunked prefill and the NVFP4
// launchers, 16-byte vector access for the attention queries), so a plugin asks for 256 bytes
// more in getWorkspaceSize and aligns the pointer it gets in enqueue.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qwen35_trt::plugins {

inline constexpr std::size_t kWorkspaceAlignment = 256;

// getWorkspaceSize's answer for a kernel needing `kernel_bytes` (0 stays 0: no workspace).
inline std::size_t padded_workspace_bytes(std::size_t kernel_bytes) {
  return kernel_bytes == 0 ? 0 : kernel_bytes + kWorkspaceAlignment;
}

// The aligned start of a workspace sized by padded_workspace_bytes (null stays null).
inline void* aligned_workspace(void* workspace) {
  if (workspace == nullptr) return nullptr;
  const auto a = reinterpret_cast<std::uintptr_t>(workspace);
  return reinterpret_cast<void*>((a + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment);
}

}  // namespace qwen35_trt::plugins
