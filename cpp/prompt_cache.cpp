#include "prompt_cache.h"

#include <algorithm>
#include <cstdio>
#include <limits>

#include "tokens.h"

namespace a3s {
namespace {

// The bound is an upper limit, not a reservation: a save also leaves the machine this much free.
constexpr size_t kHostHeadroom = size_t(512) << 20;

size_t host_memory_available() {
#ifdef __linux__
    if (FILE * f = std::fopen("/proc/meminfo", "r")) {
        char line[256];
        unsigned long long kib = 0;
        bool found = false;
        while (std::fgets(line, sizeof line, f)) {
            if (std::sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
                found = true;
                break;
            }
        }
        std::fclose(f);
        if (found) return size_t(kib) * 1024;
    }
#endif
    return std::numeric_limits<size_t>::max();
}

}  // namespace

// A save copies a conversation's cells from the device while every other slot waits for the step
// (about 30 MB and 5 ms a conversation of 230 tokens on an 8B model on an H200). When kept
// conversations stop coming back (every request a new one, as in a burst of one-shot prompts),
// only one in kProbe is kept: enough to notice when they start coming back again.
constexpr uint64_t kLearn = 32;    // saves before judging
constexpr uint64_t kProbe = 8;     // below one return in kProbe saves, keep one in kProbe
constexpr uint64_t kWindow = 256;  // the record is halved past this many saves

bool PromptCache::worth_saving() {
    if (recent_saved_ < kLearn || recent_restored_ * kProbe >= recent_saved_) return true;
    return ++since_kept_ % kProbe == 0;
}

void PromptCache::save(llama_context * ctx, llama_seq_id seq, const std::vector<llama_token> & tokens) {
    if (tokens.empty() || max_bytes_ == 0) return;
    for (size_t i = 0; i < entries_.size();) {
        if (is_prefix(tokens, entries_[i].tokens)) {  // already kept, whole
            entries_[i].last_used = ++clock_;
            return;
        }
        if (is_prefix(entries_[i].tokens, tokens)) {  // an earlier turn of the same conversation
            drop(i);
        } else {
            ++i;
        }
    }
    if (!worth_saving()) {
        counts_.skipped++;
        constexpr size_t kRemembered = 64;
        if (let_go_.size() < kRemembered) {
            let_go_.push_back(tokens);
        } else {
            let_go_[let_go_next_] = tokens;
            let_go_next_ = (let_go_next_ + 1) % kRemembered;
        }
        return;
    }
    const size_t size = llama_state_seq_get_size(ctx, seq);
    if (size == 0 || size > max_bytes_ || size + kHostHeadroom > host_memory_available()) return;
    while (!entries_.empty() && bytes_ + size > max_bytes_) {
        const auto oldest = std::min_element(entries_.begin(), entries_.end(),
                                             [](const Entry & a, const Entry & b) { return a.last_used < b.last_used; });
        spill(size_t(oldest - entries_.begin()));
    }
    Entry e;
    e.state.resize(size);
    if (llama_state_seq_get_data(ctx, e.state.data(), size, seq) != size) return;
    e.tokens = tokens;
    e.last_used = ++clock_;
    bytes_ += size;
    entries_.push_back(std::move(e));
    counts_.saved++;
    if (++recent_saved_ > kWindow) {
        recent_saved_ /= 2;
        recent_restored_ /= 2;
    }
}

PromptCache::Match PromptCache::best(const std::vector<llama_token> & prompt) const {
    const auto [index, common] = longest_shared_prefix(entries_, prompt);
    Match m{index, common, false};
    if (disk_) {
        const PromptDisk::Match d = disk_->best(prompt);
        if (d.common > m.common) m = Match{d.index, d.common, true};
    }
    return m;
}

void PromptCache::note_prompt(const std::vector<llama_token> & prompt) {
    for (auto & tokens : let_go_) {
        if (!tokens.empty() && is_prefix(tokens, prompt)) {
            recent_restored_++;
            tokens.clear();  // counted once
            return;
        }
    }
}

bool PromptCache::restore(llama_context * ctx, const Match & match, llama_seq_id seq) {
    std::vector<uint8_t> read;
    const std::vector<uint8_t> * state = &read;
    if (match.on_disk) {
        if (!disk_ || !disk_->read(match.index, read)) return false;
    } else {
        Entry & e = entries_[size_t(match.index)];
        e.last_used = ++clock_;
        state = &e.state;
    }
    if (llama_state_seq_set_data(ctx, state->data(), state->size(), seq) != state->size()) return false;
    counts_.restored++;
    counts_.from_disk += match.on_disk;
    recent_restored_++;
    return true;
}

void PromptCache::keep_on_disk(llama_context * ctx, llama_seq_id seq, const std::vector<llama_token> & tokens) {
    if (!disk_ || tokens.empty()) return;
    std::vector<uint8_t> state(llama_state_seq_get_size(ctx, seq));
    if (!state.empty() && llama_state_seq_get_data(ctx, state.data(), state.size(), seq) == state.size()) {
        disk_->put(tokens, state);
    }
}

void PromptCache::spill(size_t index) {
    if (disk_) disk_->put(entries_[index].tokens, entries_[index].state);
    drop(index);
}

size_t PromptCache::clear() {
    const size_t freed = bytes_;
    if (disk_) {  // the most recently used last, so that the disk's bound drops the oldest first
        std::sort(entries_.begin(), entries_.end(),
                  [](const Entry & a, const Entry & b) { return a.last_used < b.last_used; });
        for (const Entry & e : entries_) disk_->put(e.tokens, e.state);
    }
    entries_.clear();
    entries_.shrink_to_fit();
    let_go_.clear();
    let_go_next_ = 0;
    bytes_ = 0;
    return freed;
}

void PromptCache::drop(size_t index) {
    bytes_ -= entries_[index].state.size();
    entries_.erase(entries_.begin() + long(index));
}

}  // namespace a3s
