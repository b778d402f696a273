// The fork-join team the XLA targets split their work over.
//
// Why not `#pragma omp parallel`: a decode step calls ~50 targets a few microseconds apart (XLA's small
// fusions run between them). libgomp parks its idle threads on a futex after a short spin once it counts
// more threads than cores (XLA's own pool counts), so each call paid a wake-up: 5% of a Flax GPT-2 batch-8
// generate in the kernel's scheduler, and OMP_WAIT_POLICY=ACTIVE (spin forever) made it ~4% faster. The
// team's workers spin for kSpin after each job, long enough to catch the next call of the step, then sleep
// on a condition variable, so an idle process burns nothing.
//
// One job at a time: a caller holds the team for its whole fork-join (XLA may run two targets at once;
// the second waits). The calling thread is member 0. Sized once, by omp_get_max_threads() (which honours
// OMP_NUM_THREADS and the CPU affinity mask). A forked child makes a fresh team.
#pragma once

#include <omp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#define PYENGINE_PAUSE() _mm_pause()
#else
#define PYENGINE_PAUSE() ((void)0)
#endif

namespace pyengine::xla {

class Team {
 public:
  // The process' team (never destroyed: its workers may outlive static destructors at exit).
  static Team& get() {
    static std::atomic<Team*> team{nullptr};
    static std::mutex making;
    Team* t = team.load(std::memory_order_acquire);
    if (t && t->pid_ == getpid()) return *t;
    std::lock_guard<std::mutex> lock(making);
    t = team.load(std::memory_order_relaxed);
    if (!t || t->pid_ != getpid()) {  // first use, or a forked child (the parent's workers are gone)
      t = new Team(omp_get_max_threads());
      team.store(t, std::memory_order_release);
    }
    return *t;
  }

  int size() const { return size_; }

  // fn(member, members) for member in [0, members), members = min(size(), want) (at least 1); member 0
  // runs on the calling thread. Returns when every member has finished.
  template <class F>
  void run(int64_t want, F&& fn) {
    const int members = static_cast<int>(want < size_ ? (want < 1 ? 1 : want) : size_);
    if (members == 1) {
      fn(0, 1);
      return;
    }
    std::lock_guard<std::mutex> serial(running_);
    members_ = members;
    using Fn = std::remove_reference_t<F>;
    job_ = [](void* f, int member, int n) { (*static_cast<Fn*>(f))(member, n); };
    fn_ = const_cast<void*>(static_cast<const void*>(&fn));
    done_.store(0, std::memory_order_relaxed);
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    if (sleeping_.load(std::memory_order_seq_cst) > 0) {
      { std::lock_guard<std::mutex> lock(sleep_); }
      wake_.notify_all();
    }
    fn(0, members);
    while (done_.load(std::memory_order_acquire) != size_ - 1) PYENGINE_PAUSE();
  }

 private:
  static constexpr auto kSpin = std::chrono::microseconds(200);

  explicit Team(int size) : size_(size < 1 ? 1 : size), pid_(getpid()) {
    for (int member = 1; member < size_; ++member) std::thread([this, member] { work(member); }).detach();
  }

  void work(int member) {
    uint64_t seen = 0;
    for (;;) {
      seen = wait_past(seen);
      if (member < members_) job_(fn_, member, members_);
      done_.fetch_add(1, std::memory_order_release);
    }
  }

  // Spins for kSpin, then sleeps, until the epoch moves past `seen`; returns the new epoch.
  uint64_t wait_past(uint64_t seen) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (int i = 0;; ++i) {
      const uint64_t now = epoch_.load(std::memory_order_acquire);
      if (now != seen) return now;
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) break;
      PYENGINE_PAUSE();
    }
    std::unique_lock<std::mutex> lock(sleep_);
    sleeping_.fetch_add(1, std::memory_order_seq_cst);
    wake_.wait(lock, [&] { return epoch_.load(std::memory_order_seq_cst) != seen; });
    sleeping_.fetch_sub(1, std::memory_order_relaxed);
    return epoch_.load(std::memory_order_acquire);
  }

  const int size_;
  const pid_t pid_;
  std::mutex running_;  // one fork-join at a time
  std::mutex sleep_;
  std::condition_variable wake_;
  std::atomic<uint64_t> epoch_{0};
  std::atomic<int> sleeping_{0}, done_{0};
  int members_ = 1;  // written before the epoch moves, read by workers after they see it
  void (*job_)(void*, int, int) = nullptr;
  void* fn_ = nullptr;
};

}  // namespace pyengine::xla
