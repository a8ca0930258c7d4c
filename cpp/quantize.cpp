#include "quantize.h"

#include <cctype>
#include <map>

#include "errors.h"
#include "log.h"
#include "model.h"

namespace a3s {

namespace {

llama_ftype ftype_of(const std::string & type) {
    static const std::map<std::string, llama_ftype> types = {
        {"q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},     {"q4_1", LLAMA_FTYPE_MOSTLY_Q4_1},
        {"q5_0", LLAMA_FTYPE_MOSTLY_Q5_0},     {"q5_1", LLAMA_FTYPE_MOSTLY_Q5_1},
        {"q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},     {"q2_k", LLAMA_FTYPE_MOSTLY_Q2_K},
        {"q3_k_s", LLAMA_FTYPE_MOSTLY_Q3_K_S}, {"q3_k_m", LLAMA_FTYPE_MOSTLY_Q3_K_M},
        {"q3_k_l", LLAMA_FTYPE_MOSTLY_Q3_K_L}, {"q4_k_s", LLAMA_FTYPE_MOSTLY_Q4_K_S},
        {"q4_k_m", LLAMA_FTYPE_MOSTLY_Q4_K_M}, {"q5_k_s", LLAMA_FTYPE_MOSTLY_Q5_K_S},
        {"q5_k_m", LLAMA_FTYPE_MOSTLY_Q5_K_M}, {"q6_k", LLAMA_FTYPE_MOSTLY_Q6_K},
        {"f16", LLAMA_FTYPE_MOSTLY_F16},       {"bf16", LLAMA_FTYPE_MOSTLY_BF16},
        {"f32", LLAMA_FTYPE_ALL_F32},
    };
    std::string key = type;
    for (auto & c : key) c = char(std::tolower(static_cast<unsigned char>(c)));
    auto it = types.find(key);
    if (it == types.end()) throw Error(ErrorKind::InvalidOption, "unsupported quantization type " + type);
    return it->second;
}

}  // namespace

void quantize(const std::string & src, const std::string & dst, const std::string & type, int n_threads) {
    const llama_ftype ftype = ftype_of(type);
    backend_init();
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.ftype = ftype;
    qp.nthread = n_threads;
    take_thread_log_errors();
    const uint32_t rc = llama_model_quantize(src.c_str(), dst.c_str(), &qp);
    if (rc != 0) {
        const std::string why = take_thread_log_errors();
        throw Error(ErrorKind::ModelLoad, "failed to quantize " + src + ": " + (why.empty() ? "llama.cpp error" : why));
    }
}

}  // namespace a3s
