#include "prompt_disk.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "tokens.h"

namespace a3s {
namespace fs = std::filesystem;
namespace {

// A file: this magic, the token count, a reserved word, the state's size, the tokens, the state.
constexpr char kMagic[8] = {'A', '3', 'S', 'P', 'C', '0', '1', '\n'};
constexpr size_t kHeader = sizeof kMagic + 4 + 4 + 8;

struct Header {
    uint32_t n_tokens = 0;
    uint64_t state_size = 0;
};

bool read_header(std::FILE * f, Header & h) {
    char magic[sizeof kMagic];
    uint32_t reserved = 0;
    return std::fread(magic, 1, sizeof magic, f) == sizeof magic && std::memcmp(magic, kMagic, sizeof magic) == 0 &&
           std::fread(&h.n_tokens, 4, 1, f) == 1 && std::fread(&reserved, 4, 1, f) == 1 &&
           std::fread(&h.state_size, 8, 1, f) == 1;
}

// FNV-1a over the token ids: a conversation's file name.
std::string name_of(const std::vector<llama_token> & tokens) {
    uint64_t h = 1469598103934665603ull;
    for (llama_token t : tokens) {
        for (int b = 0; b < 4; ++b) {
            h ^= (uint32_t(t) >> (8 * b)) & 0xff;
            h *= 1099511628211ull;
        }
    }
    char name[32];
    std::snprintf(name, sizeof name, "%016llx.kv", (unsigned long long) h);
    return name;
}

}  // namespace

PromptDisk::PromptDisk(std::string dir, size_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {
    std::error_code ec;
    fs::create_directories(dir_, ec);
    if (ec) {
        std::fprintf(stderr, "prompt cache: cannot use %s: %s\n", dir_.c_str(), ec.message().c_str());
        max_bytes_ = 0;
        return;
    }
    load_index();
}

void PromptDisk::load_index() {
    std::error_code ec;
    std::vector<std::pair<fs::file_time_type, Entry>> found;
    for (const auto & item : fs::directory_iterator(dir_, ec)) {
        const std::string path = item.path().string();
        if (item.path().extension() == ".tmp") {  // a write that did not finish
            fs::remove(item.path(), ec);
            continue;
        }
        if (item.path().extension() != ".kv") continue;
        Entry e;
        e.path = path;
        bool ok = false;
        if (std::FILE * f = std::fopen(path.c_str(), "rb")) {
            Header h;
            const size_t size = size_t(fs::file_size(item.path(), ec));
            if (read_header(f, h) && !ec && size == kHeader + size_t(h.n_tokens) * 4 + h.state_size) {
                e.tokens.resize(h.n_tokens);
                ok = std::fread(e.tokens.data(), 4, h.n_tokens, f) == h.n_tokens;
                e.bytes = size;
            }
            std::fclose(f);
        }
        if (!ok) {
            fs::remove(item.path(), ec);  // torn or foreign: never restored
            continue;
        }
        found.emplace_back(fs::last_write_time(item.path(), ec), std::move(e));
    }
    std::sort(found.begin(), found.end(), [](const auto & a, const auto & b) { return a.first < b.first; });
    for (auto & [when, e] : found) {
        e.last_used = ++clock_;
        bytes_ += e.bytes;
        entries_.push_back(std::move(e));
    }
    while (bytes_ > max_bytes_ && !entries_.empty()) drop(0);  // the bound may have shrunk since
}

bool PromptDisk::put(const std::vector<llama_token> & tokens, const std::vector<uint8_t> & state) {
    const size_t size = kHeader + tokens.size() * 4 + state.size();
    if (tokens.empty() || state.empty() || size > max_bytes_) return false;
    for (size_t i = 0; i < entries_.size();) {
        if (is_prefix(tokens, entries_[i].tokens)) {  // already kept, whole
            entries_[i].last_used = ++clock_;
            return true;
        }
        if (is_prefix(entries_[i].tokens, tokens)) {  // an earlier turn of the same conversation
            drop(i);
        } else {
            ++i;
        }
    }
    while (!entries_.empty() && bytes_ + size > max_bytes_) {
        const auto oldest = std::min_element(entries_.begin(), entries_.end(),
                                             [](const Entry & a, const Entry & b) { return a.last_used < b.last_used; });
        drop(size_t(oldest - entries_.begin()));
    }
    const std::string path = (fs::path(dir_) / name_of(tokens)).string();
    const std::string tmp = path + ".tmp";
    std::FILE * f = std::fopen(tmp.c_str(), "wb");
    if (!f) return false;
    const uint32_t n = uint32_t(tokens.size()), reserved = 0;
    const uint64_t state_size = state.size();
    bool ok = std::fwrite(kMagic, 1, sizeof kMagic, f) == sizeof kMagic && std::fwrite(&n, 4, 1, f) == 1 &&
              std::fwrite(&reserved, 4, 1, f) == 1 && std::fwrite(&state_size, 8, 1, f) == 1 &&
              std::fwrite(tokens.data(), 4, n, f) == n && std::fwrite(state.data(), 1, state.size(), f) == state.size();
    ok = (std::fclose(f) == 0) && ok;
    std::error_code ec;
    if (ok) fs::rename(tmp, path, ec);
    if (!ok || ec) {
        fs::remove(tmp, ec);
        return false;
    }
    entries_.push_back(Entry{tokens, path, size, ++clock_});
    bytes_ += size;
    return true;
}

PromptDisk::Match PromptDisk::best(const std::vector<llama_token> & prompt) const {
    const auto [index, common] = longest_shared_prefix(entries_, prompt);
    return Match{index, common};
}

bool PromptDisk::read(int index, std::vector<uint8_t> & state) {
    Entry & e = entries_[size_t(index)];
    bool ok = false;
    if (std::FILE * f = std::fopen(e.path.c_str(), "rb")) {
        Header h;
        if (read_header(f, h) && h.n_tokens == e.tokens.size() && std::fseek(f, long(h.n_tokens) * 4, SEEK_CUR) == 0) {
            state.resize(h.state_size);
            ok = std::fread(state.data(), 1, state.size(), f) == state.size();
        }
        std::fclose(f);
    }
    if (!ok) {
        drop(size_t(index));
        return false;
    }
    e.last_used = ++clock_;
    return true;
}

void PromptDisk::drop(size_t index) {
    std::error_code ec;
    fs::remove(entries_[index].path, ec);
    bytes_ -= entries_[index].bytes;
    entries_.erase(entries_.begin() + long(index));
}

}  // namespace a3s
