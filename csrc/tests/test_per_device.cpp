// ctest, no GPU needed: PerDevice (csrc/kernels/common/per_device.h), the cache behind the
// kernels' per-device setup (SM count, shared-memory opt-in): one value per device, computed once
// even under concurrent first calls, failures not kept.
#include <atomic>
#include <thread>
#include <vector>

#include "check.h"
#include "common/per_device.h"

namespace kn = qwen35_trt::kernels;

namespace {

void test_one_value_per_device() {
  kn::PerDevice<int> cache;
  int computed = 0;
  const auto sm_count_of = [&](int device) {
    int v = -1;
    const cudaError_t e = cache.get(device, v, [&](int& n) {
      ++computed;
      n = 100 + device;  // a different "SM count" per device
      return cudaSuccess;
    });
    CHECK(e == cudaSuccess);
    return v;
  };
  CHECK(sm_count_of(0) == 100);
  CHECK(sm_count_of(1) == 101);  // the second device gets its own value, not device 0's
  CHECK(sm_count_of(0) == 100);
  CHECK(sm_count_of(1) == 101);
  CHECK(computed == 2);
}

void test_failures_are_retried() {
  kn::PerDevice<int> cache;
  int calls = 0;
  int v = 7;
  CHECK(cache.get(0, v, [&](int& n) { ++calls; n = 1; return cudaErrorInvalidValue; }) == cudaErrorInvalidValue);
  CHECK(v == 7);  // untouched on failure
  CHECK(cache.get(0, v, [&](int& n) { ++calls; n = 5; return cudaSuccess; }) == cudaSuccess);
  CHECK(v == 5 && calls == 2);
}

void test_concurrent_first_calls_compute_once() {
  kn::PerDevice<int> cache;
  std::atomic<int> computed{0};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      const int device = t % 2;
      int v = 0;
      cache.get(device, v, [&](int& n) {
        computed.fetch_add(1);
        std::this_thread::yield();
        n = 10 * (device + 1);
        return cudaSuccess;
      });
      if (v != 10 * (device + 1)) wrong.fetch_add(1);
    });
  }
  for (auto& th : threads) th.join();
  CHECK(computed.load() == 2);
  CHECK(wrong.load() == 0);
}

}  // namespace

int main() {
  test_one_value_per_device();
  test_failures_are_retried();
  test_concurrent_first_calls_compute_once();
  return qwen35_trt::test::report();
}
