// Token sequences compared from their start: how the prefix cache finds what it can reuse.
#pragma once

#include <algorithm>
#include <utility>
#include <vector>

#include "llama.h"

namespace a3s {

inline size_t common_prefix(const std::vector<llama_token> & a, const std::vector<llama_token> & b) {
    const size_t lim = std::min(a.size(), b.size());
    return size_t(std::mismatch(a.begin(), a.begin() + long(lim), b.begin()).first - a.begin());
}

inline bool is_prefix(const std::vector<llama_token> & shorter, const std::vector<llama_token> & longer) {
    return common_prefix(shorter, longer) == shorter.size();
}

// Of `entries` (each with its `tokens`), the one sharing the longest prefix with `prompt`:
// (its index, or -1 when none shares a token; how many tokens it shares).
template <class Entries>
std::pair<int, size_t> longest_shared_prefix(const Entries & entries, const std::vector<llama_token> & prompt) {
    std::pair<int, size_t> best{-1, 0};
    for (size_t i = 0; i < entries.size(); ++i) {
        const size_t n = common_prefix(entries[i].tokens, prompt);
        if (n > best.second) best = {int(i), n};
    }
    return best;
}

}  // namespace a3s
