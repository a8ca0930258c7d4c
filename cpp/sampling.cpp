#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#include "errors.h"
#include "log.h"

namespace a3s {
namespace {

// penalize_newline=false: the penalties sampler must leave the newline token's logit alone.
// llama.cpp dropped that switch, so this wrapper restores the newline logit after the
// wrapped penalties sampler has run.
struct KeepNewline {
    llama_sampler * inner;
    llama_token newline;
};

llama_sampler * keep_newline_clone(const llama_sampler * smpl);

llama_sampler_i * keep_newline_iface() {
    static llama_sampler_i iface = [] {
        llama_sampler_i i{};
        i.name = [](const llama_sampler *) { return "penalties-keep-newline"; };
        i.accept = [](llama_sampler * s, llama_token t) {
            llama_sampler_accept(static_cast<KeepNewline *>(s->ctx)->inner, t);
        };
        i.apply = [](llama_sampler * s, llama_token_data_array * cur) {
            auto * k = static_cast<KeepNewline *>(s->ctx);
            float saved = 0.0f;
            long at = -1;
            for (size_t j = 0; j < cur->size; ++j) {
                if (cur->data[j].id == k->newline) {
                    at = long(j);
                    saved = cur->data[j].logit;
                    break;
                }
            }
            llama_sampler_apply(k->inner, cur);
            if (at >= 0) {
                // The penalties sampler does not reorder candidates, so the index still holds.
                cur->data[at].logit = saved;
            }
        };
        i.reset = [](llama_sampler * s) { llama_sampler_reset(static_cast<KeepNewline *>(s->ctx)->inner); };
        i.clone = keep_newline_clone;
        i.free = [](llama_sampler * s) {
            auto * k = static_cast<KeepNewline *>(s->ctx);
            llama_sampler_free(k->inner);
            delete k;
        };
        return i;
    }();
    return &iface;
}

llama_sampler * make_keep_newline(llama_sampler * inner, llama_token newline) {
    return llama_sampler_init(keep_newline_iface(), new KeepNewline{inner, newline});
}

llama_sampler * keep_newline_clone(const llama_sampler * smpl) {
    auto * k = static_cast<const KeepNewline *>(smpl->ctx);
    return make_keep_newline(llama_sampler_clone(k->inner), k->newline);
}

// Whether any of the 16 logits at p is above `floor`. Most blocks hold none once the floor has
// risen, and this vector compare is about ten times faster than a scalar compare per logit.
constexpr int kBlock = 16;
inline bool block_above(const float * p, float floor) {
#if defined(__SSE__) || defined(_M_X64)
    const __m128 m = _mm_max_ps(_mm_max_ps(_mm_loadu_ps(p), _mm_loadu_ps(p + 4)),
                                _mm_max_ps(_mm_loadu_ps(p + 8), _mm_loadu_ps(p + 12)));
    return _mm_movemask_ps(_mm_cmpgt_ps(m, _mm_set1_ps(floor))) != 0;
#elif defined(__ARM_NEON)
    const float32x4_t m = vmaxq_f32(vmaxq_f32(vld1q_f32(p), vld1q_f32(p + 4)),
                                    vmaxq_f32(vld1q_f32(p + 8), vld1q_f32(p + 12)));
    return vmaxvq_f32(m) > floor;
#else
    bool any = false;
    for (int j = 0; j < kBlock; ++j) any |= p[j] > floor;
    return any;
#endif
}

uint32_t seed_of(int64_t seed) { return seed < 0 ? LLAMA_DEFAULT_SEED : uint32_t(seed); }

// The penalties' window in tokens (n_ctx for -1), and whether they change anything.
bool penalizes(const SamplingParams & p) {
    return p.repeat_last_n != 0 && (p.repeat_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0);
}

}  // namespace

Sampler::Sampler(const llama_model * model, const SamplingParams & p, int n_ctx)
    : vocab_(llama_model_get_vocab(model)), n_vocab_(llama_vocab_n_tokens(vocab_)) {
    if (p.mirostat < 0 || p.mirostat > 2) throw_invalid_option("mirostat", "must be 0, 1 or 2");
    if (p.repeat_penalty <= 0.0f) throw_invalid_option("repeat_penalty", "must be greater than 0");
    if (p.repeat_last_n < -1) throw_invalid_option("repeat_last_n", "must be -1 or more");

    if (!p.grammar.empty()) {
        take_thread_log_errors();
        if (p.grammar_triggers.empty()) {
            grammar_ = llama_sampler_init_grammar(vocab_, p.grammar.c_str(), "root");
        } else {
            std::vector<const char *> patterns;
            for (const auto & t : p.grammar_triggers) patterns.push_back(t.c_str());
            grammar_ = llama_sampler_init_grammar_lazy_patterns(vocab_, p.grammar.c_str(), "root", patterns.data(),
                                                                patterns.size(), nullptr, 0);
        }
        if (!grammar_) {
            std::string why = take_thread_log_errors();
            throw Error(ErrorKind::InvalidOption, "invalid grammar: " + (why.empty() ? "failed to parse" : why));
        }
    }

    auto cp = llama_sampler_chain_default_params();
    cp.no_perf = true;
    chain_ = llama_sampler_chain_init(cp);

    if (!p.logit_bias.empty()) {
        std::vector<llama_logit_bias> bias;
        for (const auto & [tok, b] : p.logit_bias) {
            if (tok < 0 || tok >= n_vocab_) {
                throw_invalid_option("logit_bias", "token id " + std::to_string(tok) + " is outside the vocabulary");
            }
            bias.push_back({tok, b});
            biased_.push_back(tok);
        }
        llama_sampler_chain_add(chain_, llama_sampler_init_logit_bias(n_vocab_, int32_t(bias.size()), bias.data()));
    }

    const int last_n = p.repeat_last_n < 0 ? n_ctx : p.repeat_last_n;
    if (penalizes(p)) {
        llama_sampler * pen =
            llama_sampler_init_penalties(n_vocab_, last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty);
        const llama_token nl = llama_vocab_nl(vocab_);
        llama_sampler_chain_add(chain_, (!p.penalize_newline && nl >= 0) ? make_keep_newline(pen, nl) : pen);
        recent_cap_ = size_t(last_n);
    }

    if (p.temperature <= 0.0f) {
        llama_sampler_chain_add(chain_, llama_sampler_init_greedy());
    } else if (p.mirostat == 1) {
        llama_sampler_chain_add(chain_, llama_sampler_init_temp(p.temperature));
        llama_sampler_chain_add(chain_,
                                llama_sampler_init_mirostat(n_vocab_, seed_of(p.seed), p.mirostat_tau, p.mirostat_eta, 100));
    } else if (p.mirostat == 2) {
        llama_sampler_chain_add(chain_, llama_sampler_init_temp(p.temperature));
        llama_sampler_chain_add(chain_, llama_sampler_init_mirostat_v2(seed_of(p.seed), p.mirostat_tau, p.mirostat_eta));
    } else {
        if (p.top_k > 0) llama_sampler_chain_add(chain_, llama_sampler_init_top_k(p.top_k));
        if (p.typical_p > 0.0f && p.typical_p < 1.0f) llama_sampler_chain_add(chain_, llama_sampler_init_typical(p.typical_p, 1));
        if (p.top_p > 0.0f && p.top_p < 1.0f) llama_sampler_chain_add(chain_, llama_sampler_init_top_p(p.top_p, 1));
        if (p.min_p > 0.0f) llama_sampler_chain_add(chain_, llama_sampler_init_min_p(p.min_p, 1));
        llama_sampler_chain_add(chain_, llama_sampler_init_temp(p.temperature));
        llama_sampler_chain_add(chain_, llama_sampler_init_dist(seed_of(p.seed)));
    }
    candidates_.resize(n_vocab_);

    // Shortlisting pays off while the k kept are few against the vocabulary.
    // A3S_POWER_SAMPLER_SHORTLIST=0 turns it off, to compare against the whole vocabulary.
    const char * env = std::getenv("A3S_POWER_SAMPLER_SHORTLIST");
    const bool allowed = !(env && std::string(env) == "0");
    const int k = p.temperature <= 0.0f ? 1 : (p.mirostat == 0 ? p.top_k : 0);
    if (allowed && k > 0 && k <= 1024 && size_t(k) * 8 + recent_cap_ + biased_.size() < size_t(n_vocab_)) {
        shortlist_k_ = k;
        touched_.assign(n_vocab_, 0);
        best_.reserve(k + 1);
    }
}

Sampler::~Sampler() {
    if (chain_) llama_sampler_free(chain_);
    if (grammar_) llama_sampler_free(grammar_);
}

void Sampler::fill_candidates(const float * logits) {
    for (int i = 0; i < n_vocab_; ++i) candidates_[i] = llama_token_data{i, logits[i], 0.0f};
    n_candidates_ = size_t(n_vocab_);
}

// The chain's first cut after logit bias and penalties keeps its k best candidates. Only tokens
// whose logit bias or penalties change (the "touched") can move, so the chain gives the same
// pick from the k best untouched tokens plus every touched one as from the whole vocabulary:
// any other token has k untouched ones above it. One pass over the logits instead of building,
// penalising and sorting a candidate per token (about 120-330 us a token at 49k tokens).
bool Sampler::fill_shortlist(const float * logits) {
    std::vector<llama_token> touched_ids;
    auto touch = [&](llama_token t) {
        if (!touched_[t]) {
            touched_[t] = 1;
            touched_ids.push_back(t);
        }
    };
    for (llama_token t : biased_) touch(t);
    for (llama_token t : recent_) touch(t);

    const auto greater = [](const std::pair<float, llama_token> & a, const std::pair<float, llama_token> & b) {
        return a.first > b.first;
    };
    const size_t k = size_t(shortlist_k_);
    best_.clear();
    float floor = -std::numeric_limits<float>::infinity();
    auto offer = [&](int i) {
        const float l = logits[i];
        // Strictly above: on equal logits the lower id stays, as in a scan of the whole vocabulary.
        if (!(l > floor) || touched_[i]) return;
        best_.emplace_back(l, i);
        std::push_heap(best_.begin(), best_.end(), greater);
        if (best_.size() > k) {
            std::pop_heap(best_.begin(), best_.end(), greater);
            best_.pop_back();
        }
        if (best_.size() == k) floor = best_.front().first;
    };
    int i = 0;
    for (; i + kBlock <= n_vocab_; i += kBlock) {
        if (!block_above(logits + i, floor)) continue;
        for (int j = i; j < i + kBlock; ++j) offer(j);
    }
    for (; i < n_vocab_; ++i) offer(i);
    for (llama_token t : touched_ids) touched_[t] = 0;
    if (best_.size() < k) return false;  // fewer than k finite logits: take the whole vocabulary

    // In token order, as the whole vocabulary would be, so that ties resolve alike.
    std::vector<llama_token> ids(touched_ids);
    for (const auto & b : best_) ids.push_back(b.second);
    std::sort(ids.begin(), ids.end());
    for (size_t j = 0; j < ids.size(); ++j) candidates_[j] = llama_token_data{ids[j], logits[ids[j]], 0.0f};
    n_candidates_ = ids.size();
    return true;
}

void Sampler::remember(llama_token token) {
    if (recent_cap_ == 0 || shortlist_k_ == 0) return;
    if (recent_.size() < recent_cap_) {
        recent_.push_back(token);
    } else {
        recent_[recent_next_] = token;
        recent_next_ = (recent_next_ + 1) % recent_cap_;
    }
}

llama_token Sampler::sample(const float * logits) {
    if (shortlist_k_ == 0 || !fill_shortlist(logits)) fill_candidates(logits);
    llama_token_data_array cur{candidates_.data(), n_candidates_, -1, false};
    llama_sampler_apply(chain_, &cur);
    llama_token token = cur.data[cur.selected].id;

    if (grammar_) {
        // Most picks already satisfy the grammar: check the one pick, and only when it fails
        // pay for masking the whole vocabulary and sampling again.
        llama_token_data single{token, 1.0f, 0.0f};
        llama_token_data_array one{&single, 1, -1, false};
        llama_sampler_apply(grammar_, &one);
        if (std::isinf(single.logit)) {
            fill_candidates(logits);
            llama_token_data_array all{candidates_.data(), size_t(n_vocab_), -1, false};
            llama_sampler_apply(grammar_, &all);
            llama_sampler_apply(chain_, &all);
            token = all.data[all.selected].id;
        }
        llama_sampler_accept(grammar_, token);
    }
    llama_sampler_accept(chain_, token);
    remember(token);
    return token;
}

void Sampler::accept_prompt_token(llama_token token) {
    llama_sampler_accept(chain_, token);
    remember(token);
}

std::string backend_chain_key(const SamplingParams & p, bool logprobs) {
    if (logprobs || !p.grammar.empty() || penalizes(p)) return "";
    if (p.temperature > 0.0 && (p.mirostat != 0 || (p.typical_p > 0.0 && p.typical_p < 1.0))) return "";
    // Every parameter the chain is built from, so that an equal key is an equal chain.
    std::string key;
    char part[160];
    for (const auto & [tok, bias] : p.logit_bias) {
        std::snprintf(part, sizeof part, "%d:%.9g,", tok, double(bias));
        key += part;
    }
    if (p.temperature <= 0.0) return key + "greedy";
    std::snprintf(part, sizeof part, "k=%d p=%.9g m=%.9g t=%.9g seed=%lld", p.top_k, p.top_p, p.min_p, p.temperature,
                  (long long) p.seed);
    return key + part;
}

llama_sampler * make_backend_chain(const SamplingParams & p, int32_t n_vocab) {
    auto cp = llama_sampler_chain_default_params();
    cp.no_perf = true;
    llama_sampler * chain = llama_sampler_chain_init(cp);
    if (!p.logit_bias.empty()) {  // checked against the vocabulary by the request's host Sampler
        std::vector<llama_logit_bias> bias;
        for (const auto & [tok, b] : p.logit_bias) bias.push_back({tok, b});
        llama_sampler_chain_add(chain, llama_sampler_init_logit_bias(n_vocab, int32_t(bias.size()), bias.data()));
    }
    if (p.temperature <= 0.0) {
        llama_sampler_chain_add(chain, llama_sampler_init_greedy());
        return chain;
    }
    // The host chain's order (Sampler's constructor), without the links a key excludes.
    if (p.top_k > 0) llama_sampler_chain_add(chain, llama_sampler_init_top_k(p.top_k));
    if (p.top_p > 0.0 && p.top_p < 1.0) llama_sampler_chain_add(chain, llama_sampler_init_top_p(float(p.top_p), 1));
    if (p.min_p > 0.0) llama_sampler_chain_add(chain, llama_sampler_init_min_p(float(p.min_p), 1));
    llama_sampler_chain_add(chain, llama_sampler_init_temp(float(p.temperature)));
    llama_sampler_chain_add(chain, llama_sampler_init_dist(seed_of(p.seed)));
    return chain;
}

llama_token finish_backend_pick(llama_context * ctx, int32_t i, llama_sampler * chain) {
    const float * probs = llama_get_sampled_probs_ith(ctx, i);
    const float * logits = llama_get_sampled_logits_ith(ctx, i);
    const llama_token * ids = llama_get_sampled_candidates_ith(ctx, i);
    const uint32_t n = probs ? llama_get_sampled_probs_count_ith(ctx, i)
                             : (logits ? llama_get_sampled_logits_count_ith(ctx, i) : 0);
    if (n == 0) return LLAMA_TOKEN_NULL;
    std::vector<llama_token_data> cur(n);
    for (uint32_t j = 0; j < n; ++j) {
        cur[j] = llama_token_data{ids ? ids[j] : llama_token(j), logits ? logits[j] : 0.0f, probs ? probs[j] : 0.0f};
    }
    llama_token_data_array arr{cur.data(), cur.size(), -1, false};
    llama_sampler_apply(chain, &arr);  // a chain skips the links the device ran
    return arr.selected >= 0 && size_t(arr.selected) < arr.size ? arr.data[arr.selected].id : LLAMA_TOKEN_NULL;
}

void Sampler::logprobs(const float * logits, int n_vocab, llama_token token, int top_n, float & chosen,
                       std::vector<TokenChoice> & top) {
    float max_logit = -std::numeric_limits<float>::infinity();
    for (int i = 0; i < n_vocab; ++i) max_logit = std::max(max_logit, logits[i]);
    double sum = 0.0;
    for (int i = 0; i < n_vocab; ++i) sum += std::exp(double(logits[i] - max_logit));
    const float log_z = max_logit + float(std::log(sum));
    chosen = logits[token] - log_z;
    top.clear();
    if (top_n <= 0) return;
    top_n = std::min(top_n, n_vocab);
    std::vector<llama_token> ids(n_vocab);
    for (int i = 0; i < n_vocab; ++i) ids[i] = i;
    std::partial_sort(ids.begin(), ids.begin() + top_n, ids.end(),
                      [&](llama_token a, llama_token b) { return logits[a] > logits[b]; });
    for (int i = 0; i < top_n; ++i) top.push_back({ids[i], logits[ids[i]] - log_z});
}

}  // namespace a3s
