// Conversations pushed out of their slot, kept in host memory: when one comes back (its next turn
// arrives after other conversations took every slot), its cells are restored instead of evaluated
// again. Bounded in bytes, and never filled while the machine runs short of memory; the least
// recently used entries go first, to the disk tier (PromptDisk) when there is one. Used by the
// inference thread only, but for clear().
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "llama.h"
#include "prompt_disk.h"

namespace a3s {

class PromptCache {
  public:
    explicit PromptCache(size_t max_bytes, std::unique_ptr<PromptDisk> disk = nullptr)
        : max_bytes_(max_bytes), disk_(std::move(disk)) {}

    // Keeps a copy of sequence `seq`, whose cells hold `tokens`, unless a kept entry covers it, or
    // kept conversations have stopped coming back (see worth_saving).
    void save(llama_context * ctx, llama_seq_id seq, const std::vector<llama_token> & tokens);

    struct Match {
        int index = -1;
        size_t common = 0;  // leading tokens the entry shares with the prompt
        bool on_disk = false;
    };
    // The entry sharing the longest prefix with `prompt`, in memory or on disk.
    Match best(const std::vector<llama_token> & prompt) const;

    // A new request's prompt: if it continues a conversation that was let go without a copy, that
    // counts as one that came back (worth_saving), so that saving resumes once they do.
    void note_prompt(const std::vector<llama_token> & prompt);

    // Fills the empty sequence `seq` with the entry's cells; false when llama.cpp refuses them.
    bool restore(llama_context * ctx, const Match & match, llama_seq_id seq);

    // Writes what sequence `seq` holds to the disk tier, if there is one (the engine closing).
    void keep_on_disk(llama_context * ctx, llama_seq_id seq, const std::vector<llama_token> & tokens);

    // Drops every entry from memory (to the disk tier, if there is one); returns the bytes freed.
    size_t clear();

    size_t bytes() const { return bytes_; }
    size_t disk_bytes() const { return disk_ ? disk_->bytes() : 0; }
    size_t size() const { return entries_.size(); }

    struct Counts {
        uint64_t saved = 0;     // conversations copied out of their slot
        uint64_t restored = 0;  // ... and copied back into one
        uint64_t skipped = 0;   // not copied, because few came back
        uint64_t from_disk = 0;  // of the restored, those read from the disk tier
    };
    Counts counts() const { return counts_; }

  private:
    struct Entry {
        std::vector<llama_token> tokens;
        std::vector<uint8_t> state;
        uint64_t last_used = 0;
    };
    void drop(size_t index);
    void spill(size_t index);  // to disk, then out of memory
    bool worth_saving();

    size_t max_bytes_;
    std::unique_ptr<PromptDisk> disk_;
    size_t bytes_ = 0;
    uint64_t clock_ = 0;
    std::vector<Entry> entries_;
    Counts counts_;
    // The recent record worth_saving() judges by: halved now and then, so it follows the workload.
    uint64_t recent_saved_ = 0, recent_restored_ = 0, since_kept_ = 0;
    std::vector<std::vector<llama_token>> let_go_;  // the latest conversations skipped, a ring
    size_t let_go_next_ = 0;
};

}  // namespace a3s
