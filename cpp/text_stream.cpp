#include "text_stream.h"

#include <algorithm>

namespace a3s {
namespace {

const char kReplacement[] = "\xEF\xBF\xBD";

// Length of the character a lead byte starts, or 0 when it cannot start one.
size_t utf8_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if (lead >= 0xC2 && lead <= 0xDF) return 2;
    if (lead >= 0xE0 && lead <= 0xEF) return 3;
    if (lead >= 0xF0 && lead <= 0xF4) return 4;
    return 0;
}

// The second byte's range excludes overlong forms, surrogates and code points past U+10FFFF.
bool valid_second(unsigned char lead, unsigned char b) {
    switch (lead) {
        case 0xE0: return b >= 0xA0 && b <= 0xBF;
        case 0xED: return b >= 0x80 && b <= 0x9F;
        case 0xF0: return b >= 0x90 && b <= 0xBF;
        case 0xF4: return b >= 0x80 && b <= 0x8F;
        default: return b >= 0x80 && b <= 0xBF;
    }
}

}  // namespace

size_t append_valid_utf8(const std::string & bytes, std::string & out) {
    // Invalid input becomes one U+FFFD per maximal invalid subpart, as Python's and the
    // WHATWG decoders do, so our text matches theirs byte for byte.
    size_t i = 0;
    const size_t n = bytes.size();
    while (i < n) {
        const unsigned char c = bytes[i];
        const size_t len = utf8_length(c);
        if (len == 0) {
            out += kReplacement;
            ++i;
            continue;
        }
        size_t j = 1;
        while (j < len && i + j < n) {
            const unsigned char b = bytes[i + j];
            const bool ok = j == 1 ? valid_second(c, b) : (b & 0xC0) == 0x80;
            if (!ok) break;
            ++j;
        }
        if (j == len) {
            out.append(bytes, i, len);
            i += len;
        } else if (i + j >= n) {
            break;  // the character may go on in a later token
        } else {
            out += kReplacement;
            i += j;
        }
    }
    return i;
}

TextStream::TextStream(std::vector<std::string> stop) {
    for (auto & s : stop) {
        if (!s.empty()) stop_.push_back(std::move(s));
    }
}

bool TextStream::push(const std::string & piece) {
    if (stopped_) return true;
    pending_bytes_ += piece;
    decode_complete_chars();
    release_safe_text();
    return stopped_;
}

void TextStream::decode_complete_chars() {
    const size_t used = append_valid_utf8(pending_bytes_, held_);
    pending_bytes_.erase(0, used);
}

void TextStream::release_safe_text() {
    if (stop_.empty()) {
        ready_ += held_;
        held_.clear();
        return;
    }
    // The earliest stop string wins; text before it is released and the rest is dropped.
    size_t first = std::string::npos;
    for (const auto & s : stop_) {
        const size_t at = held_.find(s);
        if (at < first) {
            first = at;
            matched_stop_ = s;
        }
    }
    if (first != std::string::npos) {
        ready_.append(held_, 0, first);
        held_.clear();
        pending_bytes_.clear();
        stopped_ = true;
        return;
    }
    // Hold back the longest tail that could still grow into a stop string.
    size_t keep = 0;
    for (const auto & s : stop_) {
        const size_t max_len = std::min(s.size() - 1, held_.size());
        for (size_t len = max_len; len > keep; --len) {
            if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
                keep = len;
                break;
            }
        }
    }
    ready_.append(held_, 0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
}

std::string TextStream::take_ready() {
    std::string out;
    out.swap(ready_);
    return out;
}

std::string TextStream::finish() {
    if (!stopped_) {
        ready_ += held_;
        held_.clear();
        if (!pending_bytes_.empty()) ready_ += kReplacement;
        pending_bytes_.clear();
    }
    return take_ready();
}

}  // namespace a3s
