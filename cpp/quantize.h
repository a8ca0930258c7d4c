// Rewriting a GGUF model in another quantization type, through llama.cpp.
#pragma once

#include <string>

namespace a3s {

// Quantizes `src` into `dst` as `type`, named as Ollama spells it (q4_K_M, Q8_0, f16, ...),
// case-insensitively; n_threads 0 = all cores. Throws Error(InvalidOption) for an unknown type and
// Error(ModelLoad), with llama.cpp's reason, when the file cannot be quantized. Blocks until done.
void quantize(const std::string & src, const std::string & dst, const std::string & type, int n_threads = 0);

}  // namespace a3s
