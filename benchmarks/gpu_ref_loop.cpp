// A raw llama.cpp loop for the GPU comparison (gpu_bench.py): the same model, context size,
// batch, threads and flash-attention setting as the engine, warmed up once, then REPS times:
//   a 4-token prompt and 128 decode steps (tg128), and
//   a 512-token prompt in one batch (pp512, timed to the first token sampled, which waits for
//   the GPU) and 128 decode steps after it (tg128 @ d512).
// Each decode step is llama_decode of one token and a greedy sample with end-of-generation banned.
// Usage: gpu_ref_loop MODEL N_THREADS FLASH_ATTN(0|1) REPS
// Prints one JSON line of per-rep tokens/s.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "llama.h"

static double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static std::string join(const std::vector<double> & v) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return "[" + s + "]";
}

int main(int argc, char ** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: %s MODEL N_THREADS FLASH_ATTN(0|1) REPS\n", argv[0]);
        return 2;
    }
    const int n_threads = std::atoi(argv[2]), fa = std::atoi(argv[3]), reps = std::atoi(argv[4]);
    const int n_ctx = 2048, n_batch = 512, n_prompt = 512, n_gen = 128;

    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 999;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 1;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = cp.n_ubatch = n_batch;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = n_threads;
    cp.flash_attn_type = fa ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.kv_unified = true;
    cp.no_perf = true;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) return 1;
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    std::vector<llama_logit_bias> ban;
    std::vector<llama_token> normal;
    for (llama_token t = 0; t < n_vocab; ++t) {
        if (llama_vocab_is_eog(vocab, t)) {
            ban.push_back({t, -1e9f});
        } else if (!llama_vocab_is_control(vocab, t)) {
            normal.push_back(t);
        }
    }
    llama_sampler * smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(smpl, llama_sampler_init_logit_bias(n_vocab, int32_t(ban.size()), ban.data()));
    llama_sampler_chain_add(smpl, llama_sampler_init_greedy());

    std::mt19937 rng(1234);
    auto prompt = [&](int n) {
        std::vector<llama_token> p(n);
        for (auto & t : p) t = normal[rng() % normal.size()];
        return p;
    };
    llama_memory_t mem = llama_get_memory(ctx);

    // One request: returns {prefill tok/s, decode tok/s}.
    auto request = [&](int n) -> std::pair<double, double> {
        llama_memory_clear(mem, true);
        llama_sampler_reset(smpl);
        std::vector<llama_token> p = prompt(n);
        const double t0 = now_s();
        if (llama_decode(ctx, llama_batch_get_one(p.data(), n)) != 0) std::exit(1);
        llama_token tok = llama_sampler_sample(smpl, ctx, -1);
        const double t1 = now_s();
        for (int i = 0; i < n_gen; ++i) {
            if (llama_decode(ctx, llama_batch_get_one(&tok, 1)) != 0) std::exit(1);
            tok = llama_sampler_sample(smpl, ctx, -1);
        }
        const double t2 = now_s();
        return {n / (t1 - t0), n_gen / (t2 - t1)};
    };

    request(n_prompt);  // warm-up
    request(4);
    std::vector<double> tg, pp, tg_d;
    for (int r = 0; r < reps; ++r) {
        tg.push_back(request(4).second);
        auto [a, b] = request(n_prompt);
        pp.push_back(a);
        tg_d.push_back(b);
    }
    std::printf("{\"tg128\": %s, \"pp512\": %s, \"tg128 @ d512\": %s}\n", join(tg).c_str(), join(pp).c_str(),
                join(tg_d).c_str());
    llama_sampler_free(smpl);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
