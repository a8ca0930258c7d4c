// Token sequences compared from their start: how the prefix cache finds what it can reuse.
#pragma once

#include <algorithm>
#include <vector>

#include "llama.h"

namespace a3s {

inline size_t common_prefix(const std::vector<llama_token> & a, const std::vector<llama_token> & b) {
    const size_t lim = std::min(a.size(), b.size());
    return size_t(std::mismatch(a.begin(), a.begin() + long(lim), b.begin()).first - a.begin());
}

}  // namespace a3s
