#include "mailbox.h"

namespace a3s {

void Mailbox::post(std::vector<Event> & events, bool urgent) {
    {
        std::lock_guard<std::mutex> lk(mutex_);
        for (auto & e : events) {
            auto it = pending_index_.find(e.id);
            if (it == pending_index_.end()) {
                pending_index_[e.id] = pending_.size();
                pending_.push_back(std::move(e));
                continue;
            }
            Event & p = pending_[it->second];
            p.text += e.text;
            p.tokens.insert(p.tokens.end(), e.tokens.begin(), e.tokens.end());
            for (auto & lp : e.logprobs) p.logprobs.push_back(std::move(lp));
            if (!e.embedding.empty()) p.embedding = std::move(e.embedding);
            if (e.done) {
                p.done = true;
                p.done_reason = e.done_reason;
                p.stop_sequence = e.stop_sequence;
                p.error = e.error;
                p.timings = e.timings;
            }
        }
    }
    events.clear();
    ready_.notify_all();
    signal_owed_ = true;
    signal(urgent);
}

void Mailbox::signal(bool urgent) {
    if (!signal_owed_) return;
    const auto now = std::chrono::steady_clock::now();
    if (!urgent && now - last_signal_ < interval_) return;
    notifier_.signal();
    last_signal_ = now;
    signal_owed_ = false;
}

std::vector<Event> Mailbox::drain(int timeout_ms) {
    notifier_.clear();
    std::unique_lock<std::mutex> lk(mutex_);
    if (pending_.empty() && timeout_ms != 0) {
        auto ready = [&] { return !pending_.empty(); };
        if (timeout_ms < 0) {
            ready_.wait(lk, ready);
        } else {
            ready_.wait_for(lk, std::chrono::milliseconds(timeout_ms), ready);
        }
    }
    std::vector<Event> out;
    out.swap(pending_);
    pending_index_.clear();
    return out;
}

}  // namespace a3s
