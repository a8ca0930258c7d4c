#include "vision.h"

#include <cstring>
#include <sys/stat.h>

#include "errors.h"
#include "log.h"
#include "mtmd-helper.h"
#include "mtmd.h"

namespace a3s {
namespace {

llama_token placeholder_for(const char * id) {
    // FNV-1a of the image's id (its SHA-256), folded into the negative token range.
    uint32_t h = 2166136261u;
    for (const char * p = id ? id : ""; *p; ++p) h = (h ^ uint8_t(*p)) * 16777619u;
    return -1 - llama_token(h & 0x3fffffff);
}

}  // namespace

Projector::Projector(ModelPtr model, const std::string & path, int n_threads, bool use_gpu)
    : model_(std::move(model)), path_(path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw Error(ErrorKind::ModelLoad, "failed to load projector " + path + ": no such file");
    mtmd_helper_log_set([](ggml_log_level level, const char * text, void * ud) {
        // Through our own callback, so projector errors reach the exception message.
        ggml_log_callback cb = nullptr;
        void * data = nullptr;
        llama_log_get(&cb, &data);
        if (cb) cb(level, text, data);
    }, nullptr);
    mtmd_context_params mp = mtmd_context_params_default();
    mp.use_gpu = use_gpu;
    mp.n_threads = n_threads > 0 ? n_threads : 4;
    mp.print_timings = false;
    mp.warmup = false;
    take_thread_log_errors();
    ctx_ = mtmd_init_from_file(path.c_str(), model_->get(), mp);
    if (!ctx_) {
        const std::string why = take_thread_log_errors();
        throw Error(ErrorKind::ModelLoad, "failed to load projector " + path + " for " + model_->path() + ": " +
                                              (why.empty() ? "it does not match the model" : why));
    }
    if (!mtmd_support_vision(ctx_)) {
        mtmd_free(ctx_);
        ctx_ = nullptr;
        throw Error(ErrorKind::ModelLoad, "projector " + path + " has no vision encoder");
    }
    mrope_ = mtmd_decode_use_mrope(ctx_);
}

Projector::~Projector() {
    if (ctx_) mtmd_free(ctx_);
}

std::string Projector::marker() const { return mtmd_default_marker(); }

MultimodalPrompt Projector::tokenize(const std::string & text, const std::vector<std::string> & images,
                                     bool add_special) const {
    std::vector<mtmd_bitmap *> bitmaps;
    auto free_bitmaps = [&] {
        for (auto * b : bitmaps) mtmd_bitmap_free(b);
    };
    for (size_t i = 0; i < images.size(); ++i) {
        const auto & bytes = images[i];
        auto wrapped = mtmd_helper_bitmap_init_from_buf(ctx_, reinterpret_cast<const unsigned char *>(bytes.data()),
                                                        bytes.size(), false, mtmd_helper_init_opt_default());
        if (!wrapped.bitmap) {
            free_bitmaps();
            throw Error(ErrorKind::InvalidOption, "image " + std::to_string(i + 1) + " could not be decoded as an image");
        }
        bitmaps.push_back(wrapped.bitmap);
    }
    mtmd_input_text input{text.c_str(), text.size(), add_special, true};
    mtmd_input_chunks * chunks = mtmd_input_chunks_init();
    take_thread_log_errors();
    const int rc = mtmd_tokenize(ctx_, chunks, &input, const_cast<const mtmd_bitmap **>(bitmaps.data()), bitmaps.size());
    free_bitmaps();
    if (rc != 0) {
        mtmd_input_chunks_free(chunks);
        const std::string why = take_thread_log_errors();
        throw Error(ErrorKind::InvalidOption, why.find("does not match number of bitmaps") != std::string::npos
                                                  ? "the number of images does not match the image markers in the prompt"
                                                  : "an image could not be processed" + (why.empty() ? "" : ": " + why));
    }
    MultimodalPrompt out;
    for (size_t i = 0; i < mtmd_input_chunks_size(chunks); ++i) {
        const mtmd_input_chunk * chunk = mtmd_input_chunks_get(chunks, i);
        if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
            size_t n = 0;
            const llama_token * toks = mtmd_input_chunk_get_tokens_text(chunk, &n);
            out.tokens.insert(out.tokens.end(), toks, toks + n);
            continue;
        }
        MediaSpan span;
        span.start = out.tokens.size();
        span.n_tokens = mtmd_input_chunk_get_n_tokens(chunk);
        span.n_pos = size_t(mtmd_input_chunk_get_n_pos(chunk));
        span.chunk = std::shared_ptr<mtmd_input_chunk>(mtmd_input_chunk_copy(chunk), mtmd_input_chunk_free);
        span.non_causal = mtmd_decode_use_non_causal(ctx_, chunk);
        out.tokens.insert(out.tokens.end(), span.n_tokens, placeholder_for(mtmd_input_chunk_get_id(chunk)));
        out.media.push_back(std::move(span));
    }
    mtmd_input_chunks_free(chunks);
    return out;
}

std::vector<float> Projector::encode(const MediaSpan & span) {
    if (mtmd_encode_chunk(ctx_, span.chunk.get()) != 0) {
        throw Error(ErrorKind::Inference, "the vision encoder failed on an image");
    }
    const float * embd = mtmd_get_output_embd(ctx_);
    const size_t n = span.n_tokens * size_t(llama_model_n_embd_inp(model_->get()));
    return std::vector<float>(embd, embd + n);
}

int Projector::decode(const MediaSpan & span, std::vector<float> & embd, llama_context * lctx, llama_pos n_past,
                      int seq, int n_batch) {
    llama_pos new_n_past = 0;
    return mtmd_helper_decode_image_chunk(ctx_, lctx, span.chunk.get(), embd.data(), n_past, seq, n_batch,
                                          &new_n_past, nullptr, nullptr);
}

}  // namespace a3s
