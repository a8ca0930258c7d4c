#pragma once
// A small pool of threads for short data-parallel loops on the engine's thread (picking one token
// per slot): the caller runs a share of the work too and returns when every index is done.

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace a3s {

class ParallelFor {
  public:
    // n_workers threads besides the caller; 0 runs every loop on the caller alone. Each worker
    // runs on_start first (the engine lowers their priority as it does its own thread's).
    explicit ParallelFor(int n_workers, std::function<void()> on_start = {});
    ~ParallelFor();
    ParallelFor(const ParallelFor &) = delete;
    ParallelFor & operator=(const ParallelFor &) = delete;

    // fn(i) for i in [0, n), in any order, on any of the threads. fn must not throw.
    void run(int n, const std::function<void(int)> & fn);

  private:
    void work();
    void take_indices();

    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable start_cv_, done_cv_;
    const std::function<void(int)> * fn_ = nullptr;
    int n_ = 0;
    std::atomic<int> next_{0};
    int busy_ = 0;             // workers inside the current loop
    uint64_t generation_ = 0;  // bumped for every loop the workers join
    bool stopping_ = false;
};

}  // namespace a3s
