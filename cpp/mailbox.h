// The engine's output on its way to the consumer: what each request produced since the consumer
// last drained, merged per request, and a file descriptor that wakes the consumer's event loop.
// Wake-ups are rationed: tokens that come within the stream interval of the last wake-up wait for
// the next one; a first token and a finished request (urgent) never wait.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "llama.h"
#include "notifier.h"
#include "sampling.h"

namespace a3s {

struct Timings {
    int64_t prompt_tokens = 0;         // the whole prompt
    int64_t cached_tokens = 0;         // of those, reused from the slot's KV cache
    int64_t prompt_eval_count = 0;     // evaluated now
    int64_t prompt_eval_duration = 0;  // ns
    int64_t eval_count = 0;
    int64_t eval_duration = 0;  // ns
};

struct TokenLogprob {
    llama_token token;
    float logprob;
    std::vector<TokenChoice> top;
};

// What a request produced since the last drain. Text is always whole UTF-8 characters.
struct Event {
    uint64_t id = 0;
    std::string text;
    std::vector<llama_token> tokens;
    std::vector<TokenLogprob> logprobs;
    std::vector<float> embedding;
    bool done = false;
    std::string done_reason;  // stop | length | cancel | error
    std::string stop_sequence;  // the stop string that ended generation, if one did
    std::string error;
    Timings timings;
};

class Mailbox {
  public:
    explicit Mailbox(int interval_ms) : interval_(interval_ms) {}

    // From the producer's thread: adds `events` (emptied) and wakes the consumer if it is due.
    void post(std::vector<Event> & events, bool urgent);
    // From the producer's thread: wakes the consumer for output posted earlier, if it is now due.
    void nudge() { signal(false); }

    // Everything posted so far, waiting up to timeout_ms for some (0 = don't wait, < 0 = forever).
    std::vector<Event> drain(int timeout_ms);
    int fd() const { return notifier_.fd(); }

  private:
    void signal(bool urgent);  // on the producer's thread only

    std::chrono::milliseconds interval_;
    std::mutex mutex_;
    std::condition_variable ready_;
    std::vector<Event> pending_;
    std::map<uint64_t, size_t> pending_index_;
    Notifier notifier_;
    std::chrono::steady_clock::time_point last_signal_{};
    bool signal_owed_ = false;  // output posted but the consumer not woken for it yet
};

}  // namespace a3s
