// A loaded GGUF model: weights, vocabulary and metadata. Contexts (engine.h) share one Model.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "llama.h"

namespace a3s {

// Load-time options, named after Ollama's where one exists.
struct ModelParams {
    int n_gpu_layers = -1;  // num_gpu: -1 = as many as fit (all), 0 = CPU only
    int main_gpu = 0;
    bool use_mmap = true;
    bool use_mlock = false;
    bool vocab_only = false;
    std::string split_mode = "layer";  // none | layer | row | tensor
    std::vector<float> tensor_split;   // proportion per GPU; empty = llama.cpp's choice
};

class Model {
  public:
    Model(const std::string & path, const ModelParams & params);
    ~Model();
    Model(const Model &) = delete;
    Model & operator=(const Model &) = delete;

    const std::string & path() const { return path_; }
    llama_model * get() const;
    const llama_vocab * vocab() const { return vocab_; }
    bool closed() const { return model_ == nullptr; }
    void close();  // frees the weights; contexts must be closed first

    std::map<std::string, std::string> metadata() const;
    std::optional<std::string> meta(const std::string & key) const;
    std::optional<std::string> chat_template(const std::string & name) const;
    std::string architecture() const;
    std::string description() const;
    int n_ctx_train() const { return llama_model_n_ctx_train(get()); }
    int n_embd() const { return llama_model_n_embd(get()); }
    int n_layer() const { return llama_model_n_layer(get()); }
    int n_swa() const { return llama_model_n_swa(get()); }
    int n_vocab() const { return llama_vocab_n_tokens(vocab_); }
    uint64_t n_params() const { return llama_model_n_params(get()); }
    uint64_t size() const { return llama_model_size(get()); }
    bool has_encoder() const { return llama_model_has_encoder(get()); }
    bool is_recurrent() const { return llama_model_is_recurrent(get()) || llama_model_is_hybrid(get()); }
    int64_t load_duration_ns() const { return load_duration_ns_; }

    std::vector<llama_token> tokenize(const std::string & text, bool add_special, bool parse_special) const;
    std::string detokenize(const std::vector<llama_token> & tokens, bool remove_special, bool unparse_special) const;
    std::string token_to_piece(llama_token token, bool special) const;
    // A reranker's input for one (query, document) pair, as llama.cpp's server builds it: the
    // model's "rerank" template with {query} and {document} filled in, or else
    // [BOS] query [EOS] [SEP] document [EOS] as the vocabulary asks.
    std::vector<llama_token> rerank_tokens(const std::string & query, const std::string & document) const;
    // Scores per input under rank pooling (llama.cpp says 1 for a model without classifier labels).
    int n_cls_out() const { return int(llama_model_n_cls_out(get())); }
    bool is_eog(llama_token token) const { return llama_vocab_is_eog(vocab_, token); }
    bool is_control(llama_token token) const { return llama_vocab_is_control(vocab_, token); }

  private:
    std::string path_;
    llama_model * model_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
    std::vector<float> tensor_split_;  // llama.cpp keeps the pointer
    int64_t load_duration_ns_ = 0;
};

using ModelPtr = std::shared_ptr<Model>;

void backend_init();

}  // namespace a3s
