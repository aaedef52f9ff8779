// CPU execution settings (qwen35_trt/cpu.h): ISA dispatch and the thread pool of the reference
// kernels. No OpenMP: torch ships its own runtime, and two in one process fight over cores.
#include "qwen35_trt/cpu.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace qwen35_trt::cpu {
namespace {

bool cpu_has(Isa isa) {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  if (isa == Isa::kAvx512) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  if (isa == Isa::kAvx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return isa == Isa::kPortable;
}

Isa initial_isa() {
  const char* env = std::getenv("QWEN35_CPU_ISA");
  if (env != nullptr && *env != '\0') {
    Isa forced;
    try {
      forced = parse_isa(env);
    } catch (const std::invalid_argument&) {
      throw std::invalid_argument(std::string("QWEN35_CPU_ISA: expected 'portable', 'avx2' or 'avx512', got '") +
                                  env + "'");
    }
    if (!isa_supported(forced)) {
      throw std::invalid_argument(std::string("QWEN35_CPU_ISA: this CPU cannot run '") + env + "'");
    }
    return forced;
  }
  return isa_supported(Isa::kAvx512) ? Isa::kAvx512 : isa_supported(Isa::kAvx2) ? Isa::kAvx2 : Isa::kPortable;
}

std::atomic<int>& isa_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

// Set on pool workers and on a thread while it runs a parallel call: a parallel_for made there
// runs inline (the pool is busy with the outer call).
thread_local bool t_in_parallel = false;

// Workers sleep on a condition variable between calls; each call hands out task indices through
// an atomic counter, so which thread runs a task varies but every task runs once.
class Pool {
 public:
  explicit Pool(std::size_t threads) {
    for (std::size_t i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }

  std::size_t size() const { return workers_.size() + 1; }

  // The caller holds PoolState::mu, so one run at a time.
  void run(std::size_t tasks, const std::function<void(std::size_t)>& fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      tasks_ = tasks;
      next_.store(0);
      active_ = workers_.size();
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    drain();
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return active_ == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

 private:
  void drain() {
    for (std::size_t i = next_.fetch_add(1); i < tasks_; i = next_.fetch_add(1)) {
      try {
        (*fn_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }

  void work() {
    t_in_parallel = true;
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      drain();
      std::lock_guard<std::mutex> lock(mu_);
      if (--active_ == 0) done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(std::size_t)>* fn_ = nullptr;
  std::size_t tasks_ = 0;
  std::atomic<std::size_t> next_{0};
  std::size_t active_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

// The pool is created lazily and never destroyed: at exit the sleeping workers simply end with
// the process, and a forked child (whose copy has no threads) gets a fresh pool. `mu` is held for
// the whole of a parallel call, so resizing never pulls a pool from under a running call.
struct PoolState {
  std::mutex mu;
  std::atomic<std::size_t> threads{1};
  Pool* pool = nullptr;
  pid_t pid = 0;
};

PoolState& state() {
  static PoolState* s = new PoolState;
  return *s;
}

}  // namespace

const char* isa_name(Isa isa) {
  return isa == Isa::kAvx512 ? "avx512" : isa == Isa::kAvx2 ? "avx2" : "portable";
}

bool isa_supported(Isa isa) { return cpu_has(isa); }

Isa parse_isa(const char* name) {
  if (std::strcmp(name, "portable") == 0) return Isa::kPortable;
  if (std::strcmp(name, "avx2") == 0) return Isa::kAvx2;
  if (std::strcmp(name, "avx512") == 0) return Isa::kAvx512;
  throw std::invalid_argument(std::string("isa: expected 'portable', 'avx2' or 'avx512', got '") + name + "'");
}

Isa isa() { return static_cast<Isa>(isa_slot().load()); }

void set_isa(Isa isa) {
  if (!isa_supported(isa)) {
    throw std::invalid_argument(std::string("isa: this CPU cannot run '") + isa_name(isa) + "'");
  }
  isa_slot().store(static_cast<int>(isa));
}

void set_num_threads(std::size_t n) {
  if (n == 0) throw std::invalid_argument("threads: must be >= 1, got 0");
  state().threads.store(n);
}

std::size_t num_threads() { return state().threads.load(); }

void parallel_for(std::size_t tasks, const std::function<void(std::size_t)>& fn) {
  PoolState& s = state();
  const std::size_t threads = s.threads.load();
  if (tasks > 1 && threads > 1 && !t_in_parallel) {
    std::unique_lock<std::mutex> lock(s.mu, std::try_to_lock);
    if (lock.owns_lock()) {  // otherwise another thread's call holds the pool: run inline
      if (s.pool != nullptr && s.pid != getpid()) s.pool = nullptr;  // forked: leave it behind
      if (s.pool != nullptr && s.pool->size() != threads) {
        s.pool->stop();
        delete s.pool;
        s.pool = nullptr;
      }
      if (s.pool == nullptr) {
        s.pool = new Pool(threads);
        s.pid = getpid();
      }
      t_in_parallel = true;
      struct Reset {
        ~Reset() { t_in_parallel = false; }
      } reset;
      s.pool->run(tasks, fn);
      return;
    }
  }
  for (std::size_t i = 0; i < tasks; ++i) fn(i);
}

}  // namespace qwen35_trt::cpu
