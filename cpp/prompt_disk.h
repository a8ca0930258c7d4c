// The prompt cache's second tier: conversations written to files when host memory lets them go
// (PromptCache) and when the engine closes, so that they come back after a restart or after the
// model was unloaded for another. One folder per model and KV layout (the caller names it, so a
// changed model never reads another's cells); bounded in bytes, least recently used out first.
// Each file is written to a temporary and renamed, and checked whole when read: a torn one is
// dropped, never restored. Used by the inference thread only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "llama.h"

namespace a3s {

class PromptDisk {
  public:
    PromptDisk(std::string dir, size_t max_bytes);

    // Writes a conversation's cells (llama_state_seq_get_data's bytes), replacing the files of its
    // earlier turns. False when it does not fit or the write fails (then nothing is left behind).
    bool put(const std::vector<llama_token> & tokens, const std::vector<uint8_t> & state);

    struct Match {
        int index = -1;
        size_t common = 0;
    };
    Match best(const std::vector<llama_token> & prompt) const;
    // The cells of entry `index`; false (and the entry dropped) when its file is gone or torn.
    bool read(int index, std::vector<uint8_t> & state);

    size_t bytes() const { return bytes_; }
    size_t size() const { return entries_.size(); }

  private:
    struct Entry {
        std::vector<llama_token> tokens;
        std::string path;
        size_t bytes = 0;
        uint64_t last_used = 0;
    };
    void load_index();
    void drop(size_t index);

    std::string dir_;
    size_t max_bytes_;
    size_t bytes_ = 0;
    uint64_t clock_ = 0;
    std::vector<Entry> entries_;
};

}  // namespace a3s
