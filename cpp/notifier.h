// Wakes an asyncio loop from the inference thread: the loop watches fd() with add_reader, and the
// engine signals at most once per drain, so Python wakes per batch of tokens, never per token.
#pragma once

#include <atomic>

namespace a3s {

class Notifier {
  public:
    Notifier();
    ~Notifier();
    Notifier(const Notifier &) = delete;
    Notifier & operator=(const Notifier &) = delete;

    int fd() const { return read_fd_; }
    void signal();  // from the inference thread
    // From the consumer, before it collects what is pending (never after: see notifier.cpp).
    void clear();

  private:
    int read_fd_ = -1;
    int write_fd_ = -1;
    std::atomic<bool> signalled_{false};
};

}  // namespace a3s
