#include "log.h"

#include <atomic>
#include <cstdio>

#include "llama.h"

namespace a3s {
namespace {

std::atomic<int> g_level{0};
thread_local std::string t_errors;
thread_local std::string t_line;  // llama.cpp may log one line in several calls
thread_local ggml_log_level t_line_level = GGML_LOG_LEVEL_INFO;
thread_local bool t_holding = false;
thread_local std::string t_held;

int rank_of(ggml_log_level level) {
    switch (level) {
        case GGML_LOG_LEVEL_ERROR: return 0;
        case GGML_LOG_LEVEL_WARN: return 1;
        case GGML_LOG_LEVEL_INFO: return 2;
        default: return 3;
    }
}

void on_log(ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_CONT) {
        t_line += text;
    } else {
        t_line_level = level;
        t_line = text;
    }
    const bool problem = t_line_level == GGML_LOG_LEVEL_ERROR || t_line_level == GGML_LOG_LEVEL_WARN;
    if (problem && !t_line.empty() && t_line.back() == '\n') {
        if (!t_errors.empty()) t_errors += "; ";
        t_errors.append(t_line, 0, t_line.size() - 1);
        if (t_errors.size() > 4096) t_errors.erase(0, t_errors.size() - 4096);
        t_line.clear();
    }
    if (rank_of(t_line_level) > g_level.load(std::memory_order_relaxed)) return;
    if (t_holding) {
        t_held += text;
    } else {
        std::fputs(text, stderr);
    }
}

}  // namespace

void set_log_level(int level) { g_level.store(level); }
int log_level() { return g_level.load(); }
void install_log_callback() { llama_log_set(on_log, nullptr); }

std::string take_thread_log_errors() {
    std::string out;
    out.swap(t_errors);
    return out;
}

void hold_thread_log() { t_holding = true; }

void release_thread_log(bool print) {
    t_holding = false;
    if (t_held.empty()) return;
    if (print) std::fputs(t_held.c_str(), stderr);
    t_held.clear();
}

}  // namespace a3s
