// A small SIMT emulator for tests: runs CUDA kernel *source* on the CPU, so that the Gated
// DeltaNet kernels' indexing, shared-memory layouts, barriers and tensor-core fragment mapping are
// exercised on machines without a GPU (CI). Include it before any kernel header.
//
// Model: each CUDA thread of a block is a std::thread; blocks run one after another. Supported:
// threadIdx / blockIdx / blockDim / gridDim; __syncthreads (a block barrier); __shfl_xor_sync (a
// warp exchange through a barrier; every lane of the warp must take part, as the kernels do);
// atomicOr; static __shared__ arrays (one copy, shared by the running block) and dynamic shared
// memory through QWEN35_DYNAMIC_SMEM, poisoned with 0xFF bytes before each block; the mma.sync
// m16n8k16 bf16 MMA, reconstructed from the 32 lanes' fragments by the PTX ISA layout and
// accumulated in fp32; ldmatrix (.x4, optionally .trans) and stmatrix (.x4), built from the 32
// lanes' row addresses;
// cp.async, deferred: a thread's copies land only at its cp.async.wait_all, so reading a tile before
// the wait and the barrier after it sees stale data or the poison. Barrier skew (simt::barrier_skew_us):
// after every __syncthreads the warps leave one after another, warp w delayed by w (or, negative,
// by warps - 1 - w) times the skew, so one warp runs a whole phase ahead of the others and a missing
// barrier between a phase's writes and another warp's reads (or the reverse) shows up as a wrong
// result instead of depending on the OS scheduler. Not modelled: memory ordering beyond the
// barriers, warp divergence (a barrier or shuffle reached by only part of a block or warp
// deadlocks instead of misbehaving), performance. It is slow (OS threads and barriers): keep grids
// small.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define QWEN35_SIMT_EMULATION 1

namespace simt {

struct Warp {
  std::barrier<> bar{32};
  float fx[32];
  const unsigned char* rows[32];
  uint32_t st[32][4];
  uint32_t a[32][4];
  uint32_t b[32][2];
};

struct Block {
  explicit Block(unsigned threads, std::size_t smem_bytes)
      : bar(static_cast<std::ptrdiff_t>(threads)), smem(smem_bytes + 16, 0xFF) {
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) warps.push_back(std::make_unique<Warp>());
  }
  std::barrier<> bar;
  std::vector<std::unique_ptr<Warp>> warps;
  std::vector<unsigned char> smem;
  std::mutex atomics;
};

inline thread_local uint3 thread_idx;
inline thread_local uint3 block_idx;
inline thread_local dim3 block_dim;
inline thread_local dim3 grid_dim;
inline thread_local Block* block = nullptr;

// A thread's cp.async copies not yet waited for (16 bytes each).
struct PendingCopy {
  void* dst;
  const void* src;
};
inline thread_local std::vector<PendingCopy> pending_copies;

// Barrier skew in microseconds per warp (0: off; negative: the last warp leaves first).
inline int barrier_skew_us = 0;

inline Warp& warp() { return *block->warps[thread_idx.x / 32]; }

inline unsigned char* dynamic_smem() {
  // 16-byte aligned, as the kernels' declaration asks.
  const auto p = reinterpret_cast<uintptr_t>(block->smem.data());
  return block->smem.data() + ((16 - p % 16) % 16);
}

// Runs kernel() as grid x block threads (1-D blocks of a multiple of 32 threads).
template <typename Kernel>
void launch(dim3 grid, unsigned threads, std::size_t smem_bytes, Kernel kernel) {
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        Block blk(threads, smem_bytes);
        std::vector<std::thread> ts;
        ts.reserve(threads);
        for (unsigned t = 0; t < threads; ++t) {
          ts.emplace_back([&, t] {
            thread_idx = make_uint3(t, 0, 0);
            block_idx = make_uint3(x, y, z);
            block_dim = dim3(threads, 1, 1);
            grid_dim = grid;
            block = &blk;
            kernel();
          });
        }
        for (auto& th : ts) th.join();
      }
}

inline float bf16_low(uint32_t w) {
  uint32_t u = w << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float bf16_high(uint32_t w) {
  uint32_t u = w & 0xFFFF0000u;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace simt

// ---- the CUDA built-ins the kernels use

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __launch_bounds__(...)
#define threadIdx (::simt::thread_idx)
#define blockIdx (::simt::block_idx)
#define blockDim (::simt::block_dim)
#define gridDim (::simt::grid_dim)
#define QWEN35_DYNAMIC_SMEM(name) unsigned char* name = ::simt::dynamic_smem()

inline void __syncthreads() {
  simt::block->bar.arrive_and_wait();
  if (simt::barrier_skew_us != 0) {
    const int w = static_cast<int>(simt::thread_idx.x / 32), warps = static_cast<int>((simt::block_dim.x + 31) / 32);
    const int rank = simt::barrier_skew_us > 0 ? w : warps - 1 - w;
    const int us = rank * (simt::barrier_skew_us > 0 ? simt::barrier_skew_us : -simt::barrier_skew_us);
    if (us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
  }
}

inline float __shfl_xor_sync(unsigned /*mask*/, float v, int lane_mask) {
  simt::Warp& w = simt::warp();
  const unsigned lane = simt::thread_idx.x % 32;
  w.fx[lane] = v;
  w.bar.arrive_and_wait();
  const float r = w.fx[lane ^ static_cast<unsigned>(lane_mask)];
  w.bar.arrive_and_wait();
  return r;
}

inline int atomicOr(int* address, int value) {
  std::lock_guard<std::mutex> lock(simt::block->atomics);
  const int old = *address;
  *address = old | value;
  return old;
}

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, per the PTX ISA fragment layout
// (g = lane / 4, t = lane % 4; the low half of each 32-bit register is the lower index):
//   A: a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1], a2 = A[g][2t+8, 2t+9], a3 = A[g+8][2t+8, 2t+9]
//   B: b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]
//   C: c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1]
inline void qwen35_emulated_mma_bf16_16x8x16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  simt::Warp& w = simt::warp();
  const unsigned lane = simt::thread_idx.x % 32;
  std::memcpy(w.a[lane], a, sizeof(w.a[lane]));
  std::memcpy(w.b[lane], b, sizeof(w.b[lane]));
  w.bar.arrive_and_wait();
  float A[16][16], B[16][8];
  for (unsigned l = 0; l < 32; ++l) {
    const unsigned g = l / 4, t = l % 4;
    A[g][2 * t] = simt::bf16_low(w.a[l][0]);
    A[g][2 * t + 1] = simt::bf16_high(w.a[l][0]);
    A[g + 8][2 * t] = simt::bf16_low(w.a[l][1]);
    A[g + 8][2 * t + 1] = simt::bf16_high(w.a[l][1]);
    A[g][2 * t + 8] = simt::bf16_low(w.a[l][2]);
    A[g][2 * t + 9] = simt::bf16_high(w.a[l][2]);
    A[g + 8][2 * t + 8] = simt::bf16_low(w.a[l][3]);
    A[g + 8][2 * t + 9] = simt::bf16_high(w.a[l][3]);
    B[2 * t][g] = simt::bf16_low(w.b[l][0]);
    B[2 * t + 1][g] = simt::bf16_high(w.b[l][0]);
    B[2 * t + 8][g] = simt::bf16_low(w.b[l][1]);
    B[2 * t + 9][g] = simt::bf16_high(w.b[l][1]);
  }
  w.bar.arrive_and_wait();
  const unsigned g = lane / 4, t = lane % 4;
  for (int e = 0; e < 4; ++e) {
    const unsigned row = g + 8 * (e / 2), col = 2 * t + (e % 2);
    float acc = 0.0f;
    for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
    c[e] += acc;
  }
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8j..8j+7 give the row addresses of matrix
// j (8 rows of 8 bf16, 16 bytes each); register j of lane l = 4g + t holds row g, columns 2t, 2t+1
// of matrix j, or with .trans column g, rows 2t, 2t+1 (the low half the lower index).
inline void qwen35_emulated_ldmatrix_x4(uint32_t r[4], const void* row_addr, bool trans) {
  simt::Warp& w = simt::warp();
  const unsigned lane = simt::thread_idx.x % 32;
  w.rows[lane] = static_cast<const unsigned char*>(row_addr);
  w.bar.arrive_and_wait();
  const unsigned g = lane / 4, t = lane % 4;
  for (int j = 0; j < 4; ++j) {
    uint16_t lo, hi;
    if (trans) {
      std::memcpy(&lo, w.rows[8 * j + 2 * t] + 2 * g, 2);
      std::memcpy(&hi, w.rows[8 * j + 2 * t + 1] + 2 * g, 2);
    } else {
      std::memcpy(&lo, w.rows[8 * j + g] + 4 * t, 2);
      std::memcpy(&hi, w.rows[8 * j + g] + 4 * t + 2, 2);
    }
    r[j] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  w.bar.arrive_and_wait();
}

// stmatrix.sync.aligned.m8n8.x4.shared.b16: register j of lane 4g + t holds row g, columns 2t, 2t+1
// of matrix j; lanes 8j..8j+7 give the row addresses of matrix j.
inline void qwen35_emulated_stmatrix_x4(void* row_addr, const uint32_t r[4]) {
  simt::Warp& w = simt::warp();
  const unsigned lane = simt::thread_idx.x % 32;
  std::memcpy(w.st[lane], r, sizeof(w.st[lane]));
  w.bar.arrive_and_wait();
  const unsigned j = lane / 8, row = lane % 8;
  for (unsigned t = 0; t < 4; ++t) std::memcpy(static_cast<unsigned char*>(row_addr) + 4 * t, &w.st[4 * row + t][j], 4);
  w.bar.arrive_and_wait();
}

// cp.async.cg.shared.global (16 bytes), commit_group and wait_all, as described at the top.
inline void qwen35_emulated_cp_async16(void* dst, const void* src) { simt::pending_copies.push_back({dst, src}); }
inline void qwen35_emulated_cp_async_wait_all() {
  for (const simt::PendingCopy& c : simt::pending_copies) std::memcpy(c.dst, c.src, 16);
  simt::pending_copies.clear();
}
