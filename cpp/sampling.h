// The sampler chain for one request, built from Ollama's options, plus an optional GBNF grammar.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"

namespace a3s {

// The one set of sampling defaults: Python's Options reads its own from here (_core.SamplingParams()),
// so they are written nowhere else. They are Ollama's, but for repeat_penalty, which is 1.0 (off)
// as it has always been for every request here. Fractions are doubles, as Python's floats are, so
// that a value reads back as it was written; the sampler chain narrows them to float.
struct SamplingParams {
    double temperature = 0.8;  // <= 0 is greedy
    int top_k = 40;            // <= 0 disables
    double top_p = 0.9;        // >= 1 disables
    double min_p = 0.0;        // <= 0 disables
    double typical_p = 1.0;    // >= 1 disables
    int repeat_last_n = 64;    // -1 = the whole context
    double repeat_penalty = 1.0;
    double presence_penalty = 0.0;
    double frequency_penalty = 0.0;
    bool penalize_newline = true;
    int mirostat = 0;  // 0 off, 1 or 2
    double mirostat_tau = 5.0;
    double mirostat_eta = 0.1;
    int64_t seed = -1;  // < 0 = random
    std::vector<std::pair<int32_t, float>> logit_bias;
    std::string grammar;  // GBNF, root rule "root"; empty = none
    // Regular expressions over the output so far: with any, the grammar waits for the first
    // match and applies from its first group on (gpt-oss thinks first, then answers in the
    // format). Empty: the grammar applies from the first token.
    std::vector<std::string> grammar_triggers;
};

// Sampling inside the decode graph (llama.cpp's backend sampling): the device that holds the
// logits picks the token, so neither 128k logits per slot nor a scan of them per step cross to
// the host. Only for what every backend has: greedy, or top_k / top_p / min_p, temperature and a
// random pick, after a logit bias. A request that needs the host (grammar, penalties, mirostat,
// typical_p, logprobs over the raw logits) has an empty key.
std::string backend_chain_key(const SamplingParams & p, bool logprobs);
// The chain for a non-empty key; its owner frees it (llama_sampler_free) once detached.
llama_sampler * make_backend_chain(const SamplingParams & p, int32_t n_vocab);
// A chain may run only its first links on the device (those the backend supports): the rest runs
// here over the candidates the device left. LLAMA_TOKEN_NULL when the device left none.
llama_token finish_backend_pick(llama_context * ctx, int32_t i, llama_sampler * chain);

struct TokenChoice {
    llama_token token;
    float logprob;
};

class Sampler {
  public:
    Sampler(const llama_model * model, const SamplingParams & params, int n_ctx);
    ~Sampler();
    Sampler(const Sampler &) = delete;
    Sampler & operator=(const Sampler &) = delete;

    // Picks the next token from a row of logits and records it in the chain's history.
    llama_token sample(const float * logits);

    // Records a prompt token in the penalty history without sampling.
    void accept_prompt_token(llama_token token);

    // log-softmax of the raw logits for `token`, and the `top_n` most likely tokens.
    static void logprobs(const float * logits, int n_vocab, llama_token token, int top_n, float & chosen,
                         std::vector<TokenChoice> & top);

  private:
    void fill_candidates(const float * logits);
    // The chain's input when its first cut keeps the k best: see sample().
    bool fill_shortlist(const float * logits);
    void remember(llama_token token);

    const llama_vocab * vocab_;
    int n_vocab_;
    llama_sampler * chain_ = nullptr;
    llama_sampler * grammar_ = nullptr;  // kept out of the chain: checked on the pick first
    std::vector<llama_token_data> candidates_;
    size_t n_candidates_ = 0;

    // Shortlisting. shortlist_k_ > 0 when the chain, after logit bias and penalties, keeps only
    // its k best candidates (top_k, or greedy with k = 1).
    int shortlist_k_ = 0;
    std::vector<llama_token> biased_;  // tokens logit_bias changes
    std::vector<llama_token> recent_;  // the penalties' window of accepted tokens, a ring
    size_t recent_next_ = 0;
    size_t recent_cap_ = 0;  // 0: no penalties
    std::vector<uint8_t> touched_;  // per token: bias or penalties may change its logit
    std::vector<std::pair<float, llama_token>> best_;  // a min-heap of the k best untouched
};

}  // namespace a3s
