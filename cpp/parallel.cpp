#include "parallel.h"

namespace a3s {

ParallelFor::ParallelFor(int n_workers, std::function<void()> on_start) {
    for (int i = 0; i < n_workers; ++i) {
        threads_.emplace_back([this, on_start] {
            if (on_start) on_start();
            work();
        });
    }
}

ParallelFor::~ParallelFor() {
    {
        std::lock_guard<std::mutex> lk(mutex_);
        stopping_ = true;
    }
    start_cv_.notify_all();
    for (auto & t : threads_) t.join();
}

void ParallelFor::take_indices() {
    for (int i = next_.fetch_add(1); i < n_; i = next_.fetch_add(1)) (*fn_)(i);
}

void ParallelFor::run(int n, const std::function<void(int)> & fn) {
    if (threads_.empty() || n < 2) {
        for (int i = 0; i < n; ++i) fn(i);
        return;
    }
    {
        std::lock_guard<std::mutex> lk(mutex_);
        fn_ = &fn;
        n_ = n;
        next_ = 0;
        busy_ = int(threads_.size());
        generation_++;
    }
    start_cv_.notify_all();
    take_indices();
    std::unique_lock<std::mutex> lk(mutex_);
    done_cv_.wait(lk, [&] { return busy_ == 0; });
    fn_ = nullptr;
}

void ParallelFor::work() {
    uint64_t seen = 0;
    while (true) {
        {
            std::unique_lock<std::mutex> lk(mutex_);
            start_cv_.wait(lk, [&] { return stopping_ || generation_ != seen; });
            if (stopping_) return;
            seen = generation_;
        }
        take_indices();
        {
            std::lock_guard<std::mutex> lk(mutex_);
            if (--busy_ == 0) done_cv_.notify_one();
        }
    }
}

}  // namespace a3s
