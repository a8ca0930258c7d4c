// The baseline our engine is measured against: the plainest single-sequence loop over
// llama.cpp's C API, with the same model, threads and context settings as the engine.
// Usage: ref_loop MODEL PROMPT_TOKENS_FILE N_DECODE N_THREADS N_CTX N_BATCH [FLASH_ATTN auto|on|off]
// Prints one JSON line: prompt tokens, prefill ns, decode tokens, decode ns.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "llama.h"

static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

int main(int argc, char ** argv) {
    if (argc != 7 && argc != 8) {
        std::fprintf(stderr, "usage: %s MODEL PROMPT_TOKENS_FILE N_DECODE N_THREADS N_CTX N_BATCH [auto|on|off]\n",
                     argv[0]);
        return 2;
    }
    const int n_decode = std::atoi(argv[3]), n_threads = std::atoi(argv[4]);
    const int n_ctx = std::atoi(argv[5]), n_batch = std::atoi(argv[6]);
    std::vector<llama_token> prompt;
    std::ifstream in(argv[2]);
    for (int t; in >> t;) prompt.push_back(t);

    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) return 1;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = cp.n_ubatch = n_batch;
    cp.n_threads = cp.n_threads_batch = n_threads;
    const std::string fa = argc == 8 ? argv[7] : "off";
    cp.flash_attn_type = fa == "auto" ? LLAMA_FLASH_ATTN_TYPE_AUTO
                         : fa == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                                      : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    llama_context * ctx = llama_init_from_model(model, cp);
    const llama_vocab * vocab = llama_model_get_vocab(model);

    llama_sampler * smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_logit_bias no_eos{llama_vocab_eos(vocab), -1e9f};
    llama_sampler_chain_add(smpl, llama_sampler_init_logit_bias(llama_vocab_n_tokens(vocab), 1, &no_eos));
    llama_sampler_chain_add(smpl, llama_sampler_init_greedy());

    const int64_t t0 = now_ns();
    for (size_t i = 0; i < prompt.size(); i += n_batch) {
        const int n = int(std::min<size_t>(n_batch, prompt.size() - i));
        if (llama_decode(ctx, llama_batch_get_one(prompt.data() + i, n)) != 0) return 1;
    }
    llama_token tok = llama_sampler_sample(smpl, ctx, -1);
    const int64_t t1 = now_ns();
    for (int i = 1; i < n_decode; ++i) {
        if (llama_decode(ctx, llama_batch_get_one(&tok, 1)) != 0) return 1;
        tok = llama_sampler_sample(smpl, ctx, -1);
    }
    const int64_t t2 = now_ns();
    std::printf("{\"prompt_tokens\": %zu, \"prefill_ns\": %lld, \"decode_tokens\": %d, \"decode_ns\": %lld}\n",
                prompt.size(), (long long)(t1 - t0), n_decode - 1, (long long)(t2 - t1));
    llama_sampler_free(smpl);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
