// Turns token pieces into text that is safe to hand out: whole UTF-8 characters only, and never
// any part of a stop string, even when a character or a stop string spans several tokens.
#pragma once

#include <string>
#include <vector>

namespace a3s {

class TextStream {
  public:
    explicit TextStream(std::vector<std::string> stop = {});

    // Adds a token's bytes. Returns true when a stop string has now appeared; the text before it
    // is then ready and nothing after it ever will be.
    bool push(const std::string & piece);

    // Text that can be handed out now (moved out of the stream).
    std::string take_ready();

    // At the end of generation: everything still held back, with an unfinished character
    // replaced by U+FFFD.
    std::string finish();

    bool stopped() const { return stopped_; }
    const std::string & matched_stop() const { return matched_stop_; }

  private:
    void decode_complete_chars();
    void release_safe_text();

    std::vector<std::string> stop_;
    std::string pending_bytes_;  // bytes of a character that is not complete yet
    std::string held_;           // whole characters that might begin a stop string
    std::string ready_;
    bool stopped_ = false;
    std::string matched_stop_;
};

// Appends the valid UTF-8 prefix of `bytes` to `out`, replacing invalid sequences with U+FFFD.
// Returns how many bytes were consumed; an incomplete character at the end is left unconsumed.
size_t append_valid_utf8(const std::string & bytes, std::string & out);

}  // namespace a3s
