// Conversations pushed out of their slot, kept in host memory: when one comes back (its next turn
// arrives after other conversations took every slot), its cells are restored instead of evaluated
// again. Bounded in bytes, and never filled while the machine runs short of memory; the least
// recently used entries go first. Used by the inference thread only.
#pragma once

#include <cstdint>
#include <vector>

#include "llama.h"

namespace a3s {

class PromptCache {
  public:
    explicit PromptCache(size_t max_bytes) : max_bytes_(max_bytes) {}

    // Keeps a copy of sequence `seq`, whose cells hold `tokens`, unless a kept entry covers it.
    void save(llama_context * ctx, llama_seq_id seq, const std::vector<llama_token> & tokens);

    struct Match {
        int index = -1;
        size_t common = 0;  // leading tokens the entry shares with the prompt
    };
    // The entry sharing the longest prefix with `prompt`.
    Match best(const std::vector<llama_token> & prompt) const;

    // Fills the empty sequence `seq` with the entry's cells; false when llama.cpp refuses them.
    bool restore(llama_context * ctx, int index, llama_seq_id seq);

    // Drops every entry; returns the bytes that held them.
    size_t clear();

    const std::vector<llama_token> & tokens(int index) const { return entries_[size_t(index)].tokens; }
    size_t bytes() const { return bytes_; }
    size_t size() const { return entries_.size(); }

  private:
    struct Entry {
        std::vector<llama_token> tokens;
        std::vector<uint8_t> state;
        uint64_t last_used = 0;
    };
    void drop(size_t index);

    size_t max_bytes_;
    size_t bytes_ = 0;
    uint64_t clock_ = 0;
    std::vector<Entry> entries_;
};

}  // namespace a3s
