#include "model.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <sys/stat.h>

#include "errors.h"
#include "log.h"

namespace a3s {
namespace {

[[noreturn]] void load_error(const std::string & path, const std::string & reason) {
    throw Error(ErrorKind::ModelLoad, "failed to load model " + path + ": " + reason);
}

// Checks what we can say plainly before llama.cpp looks at the file.
void check_gguf_file(const std::string & path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) load_error(path, "no such file");
    if (S_ISDIR(st.st_mode)) load_error(path, "is a directory, not a GGUF file");
    std::FILE * f = std::fopen(path.c_str(), "rb");
    if (!f) load_error(path, std::string("cannot open: ") + std::strerror(errno));
    char magic[4] = {0, 0, 0, 0};
    size_t got = std::fread(magic, 1, 4, f);
    std::fclose(f);
    if (got < 4 || std::memcmp(magic, "GGUF", 4) != 0) load_error(path, "not a GGUF file (bad magic)");
}

llama_split_mode parse_split_mode(const std::string & mode) {
    if (mode == "none") return LLAMA_SPLIT_MODE_NONE;
    if (mode == "layer") return LLAMA_SPLIT_MODE_LAYER;
    if (mode == "row") return LLAMA_SPLIT_MODE_ROW;
    if (mode == "tensor") return LLAMA_SPLIT_MODE_TENSOR;
    throw_invalid_option("split_mode", "'" + mode + "' is not one of none, layer, row, tensor");
}

}  // namespace

void backend_init() {
    static std::once_flag once;
    std::call_once(once, [] {
        install_log_callback();
        llama_backend_init();
    });
}

Model::Model(const std::string & path, const ModelParams & params) : path_(path) {
    backend_init();
    if (params.main_gpu < 0) throw_invalid_option("main_gpu", "must not be negative");
    check_gguf_file(path);

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = params.n_gpu_layers < 0 ? 999 : params.n_gpu_layers;
    mp.main_gpu = params.main_gpu;
    mp.split_mode = parse_split_mode(params.split_mode);
    mp.vocab_only = params.vocab_only;
    if (params.use_mmap) {
        mp.load_mode = params.use_mlock ? LLAMA_LOAD_MODE_MMAP_MLOCK : LLAMA_LOAD_MODE_MMAP;
    } else {
        mp.load_mode = params.use_mlock ? LLAMA_LOAD_MODE_MLOCK : LLAMA_LOAD_MODE_NONE;
    }
    if (!params.tensor_split.empty()) {
        const size_t max_dev = llama_max_devices();
        if (params.tensor_split.size() > max_dev) {
            throw_invalid_option("tensor_split", "more entries than devices (" + std::to_string(max_dev) + ")");
        }
        tensor_split_.assign(max_dev, 0.0f);
        std::copy(params.tensor_split.begin(), params.tensor_split.end(), tensor_split_.begin());
        mp.tensor_split = tensor_split_.data();
    }

    take_thread_log_errors();
    const auto t0 = std::chrono::steady_clock::now();
    model_ = llama_model_load_from_file(path.c_str(), mp);
    load_duration_ns_ =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    if (!model_) {
        std::string why = take_thread_log_errors();
        load_error(path, why.empty() ? "llama.cpp could not read it" : why);
    }
    vocab_ = llama_model_get_vocab(model_);
}

Model::~Model() { close(); }

void Model::close() {
    if (model_) {
        llama_model_free(model_);
        model_ = nullptr;
        vocab_ = nullptr;
    }
}

llama_model * Model::get() const {
    if (!model_) throw Error(ErrorKind::Inference, "model " + path_ + " is closed");
    return model_;
}

std::map<std::string, std::string> Model::metadata() const {
    std::map<std::string, std::string> out;
    const int n = llama_model_meta_count(get());
    std::vector<char> key(512), val(4096);
    for (int i = 0; i < n; ++i) {
        int kl = llama_model_meta_key_by_index(model_, i, key.data(), key.size());
        if (kl < 0) continue;
        if (size_t(kl) >= key.size()) {
            key.resize(kl + 1);
            llama_model_meta_key_by_index(model_, i, key.data(), key.size());
        }
        int vl = llama_model_meta_val_str_by_index(model_, i, val.data(), val.size());
        if (vl < 0) continue;
        if (size_t(vl) >= val.size()) {
            val.resize(vl + 1);
            llama_model_meta_val_str_by_index(model_, i, val.data(), val.size());
        }
        out.emplace(std::string(key.data(), kl), std::string(val.data(), vl));
    }
    return out;
}

std::optional<std::string> Model::meta(const std::string & key) const {
    std::vector<char> buf(256);
    int n = llama_model_meta_val_str(get(), key.c_str(), buf.data(), buf.size());
    if (n < 0) return std::nullopt;
    if (size_t(n) >= buf.size()) {
        buf.resize(n + 1);
        llama_model_meta_val_str(model_, key.c_str(), buf.data(), buf.size());
    }
    return std::string(buf.data(), n);
}

std::optional<std::string> Model::chat_template(const std::string & name) const {
    const char * tmpl = llama_model_chat_template(get(), name.empty() ? nullptr : name.c_str());
    if (!tmpl) return std::nullopt;
    return std::string(tmpl);
}

std::string Model::architecture() const { return meta("general.architecture").value_or(""); }

std::string Model::description() const {
    char buf[256];
    int n = llama_model_desc(get(), buf, sizeof(buf));
    return n > 0 ? std::string(buf, std::min<size_t>(n, sizeof(buf) - 1)) : std::string();
}

std::vector<llama_token> Model::tokenize(const std::string & text, bool add_special, bool parse_special) const {
    get();
    std::vector<llama_token> tokens(text.size() + 8);
    int n = llama_tokenize(vocab_, text.data(), int32_t(text.size()), tokens.data(), int32_t(tokens.size()),
                           add_special, parse_special);
    if (n == INT32_MIN) throw Error(ErrorKind::InvalidOption, "text too long to tokenize");
    if (n < 0) {
        tokens.resize(-n);
        n = llama_tokenize(vocab_, text.data(), int32_t(text.size()), tokens.data(), int32_t(tokens.size()),
                           add_special, parse_special);
    }
    tokens.resize(n);
    return tokens;
}

std::vector<llama_token> Model::rerank_tokens(const std::string & query, const std::string & document) const {
    if (const char * tmpl = llama_model_chat_template(get(), "rerank")) {
        std::string prompt = tmpl;
        auto fill = [&prompt](const std::string & key, const std::string & value) {
            for (size_t at = prompt.find(key); at != std::string::npos; at = prompt.find(key, at + value.size())) {
                prompt.replace(at, key.size(), value);
            }
        };
        fill("{query}", query);
        fill("{document}", document);
        return tokenize(prompt, false, true);
    }
    llama_token eos = llama_vocab_eos(vocab_);
    if (eos == LLAMA_TOKEN_NULL) eos = llama_vocab_sep(vocab_);
    std::vector<llama_token> out;
    if (llama_vocab_get_add_bos(vocab_)) out.push_back(llama_vocab_bos(vocab_));
    for (llama_token t : tokenize(query, false, false)) out.push_back(t);
    if (llama_vocab_get_add_eos(vocab_)) out.push_back(eos);
    if (llama_vocab_get_add_sep(vocab_)) out.push_back(llama_vocab_sep(vocab_));
    for (llama_token t : tokenize(document, false, false)) out.push_back(t);
    if (llama_vocab_get_add_eos(vocab_)) out.push_back(eos);
    return out;
}

std::string Model::detokenize(const std::vector<llama_token> & tokens, bool remove_special,
                              bool unparse_special) const {
    get();
    const int n_vocab = llama_vocab_n_tokens(vocab_);
    for (llama_token t : tokens) {
        if (t < 0 || t >= n_vocab) {
            throw Error(ErrorKind::InvalidOption, "token id " + std::to_string(t) + " is outside the vocabulary");
        }
    }
    std::string text(tokens.size() * 8 + 16, '\0');
    int n = llama_detokenize(vocab_, tokens.data(), int32_t(tokens.size()), text.data(), int32_t(text.size()),
                             remove_special, unparse_special);
    if (n < 0) {
        text.resize(-n);
        n = llama_detokenize(vocab_, tokens.data(), int32_t(tokens.size()), text.data(), int32_t(text.size()),
                             remove_special, unparse_special);
    }
    text.resize(std::max(n, 0));
    return text;
}

std::string Model::token_to_piece(llama_token token, bool special) const {
    char buf[128];
    int n = llama_token_to_piece(vocab_, token, buf, sizeof(buf), 0, special);
    if (n >= 0) return std::string(buf, n);
    std::string big(-n, '\0');
    n = llama_token_to_piece(vocab_, token, big.data(), int32_t(big.size()), 0, special);
    big.resize(std::max(n, 0));
    return big;
}

}  // namespace a3s
