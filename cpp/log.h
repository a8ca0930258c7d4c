// llama.cpp's log goes through one process-wide callback. We keep it quiet unless asked
// (OLLAMA_DEBUG) and remember the last error lines, so a failed load can say why.
#pragma once

#include <string>

namespace a3s {

// 0 = errors only (default), 1 = warnings, 2 = info, 3 = debug.
void set_log_level(int level);
int log_level();
void install_log_callback();

// Errors and warnings logged by llama.cpp on this thread since the last call, joined by "; ".
std::string take_thread_log_errors();

// While held, what llama.cpp prints from this thread is kept back; on release it is printed, or
// dropped when the caller knows it is noise (a decode we aborted on purpose logs three errors).
void hold_thread_log();
void release_thread_log(bool print);

}  // namespace a3s
