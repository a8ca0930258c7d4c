// Images through libmtmd: a projector loaded beside a text model turns an image into embeddings
// that the engine decodes into a slot like prompt tokens.
//
// In a tokenized prompt an image occupies as many positions as it has embeddings; those
// positions hold a negative placeholder id derived from the image's hash. The prefix cache
// compares placeholders like tokens, so an image already in a slot's cache is not encoded again.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model.h"

struct mtmd_context;
struct mtmd_input_chunk;

namespace a3s {

struct MediaSpan {
    size_t start = 0;     // index of the first placeholder in the prompt
    size_t n_tokens = 0;  // embeddings: the KV cells the image takes
    size_t n_pos = 0;     // positions it advances: n_tokens, or fewer under M-RoPE (one per row or column)
    std::shared_ptr<mtmd_input_chunk> chunk;
    bool non_causal = false;  // some projectors want bidirectional attention over an image
};

struct MultimodalPrompt {
    std::vector<llama_token> tokens;  // text tokens, and placeholders where media go
    std::vector<MediaSpan> media;
};

inline bool is_media_placeholder(llama_token t) { return t < 0; }

class Projector {
  public:
    Projector(ModelPtr model, const std::string & path, int n_threads, bool use_gpu);
    ~Projector();
    Projector(const Projector &) = delete;
    Projector & operator=(const Projector &) = delete;

    const ModelPtr & model() const { return model_; }
    const std::string & path() const { return path_; }
    std::string marker() const;

    // `text` carries one marker per image, in order; images are encoded files (PNG, JPEG, ...).
    MultimodalPrompt tokenize(const std::string & text, const std::vector<std::string> & images,
                              bool add_special) const;

    // Runs the vision encoder over one image; returns n_tokens x n_embd floats.
    std::vector<float> encode(const MediaSpan & span);

    // Whether the model places image embeddings on a 2-D grid of positions (M-RoPE: Qwen2-VL and
    // its successors): an image then takes fewer positions than cells.
    bool mrope() const { return mrope_; }

    // Decodes an encoded image into sequence `seq` from position n_past, with the positions the
    // model wants (M-RoPE or not), in n_batch pieces; 0 on success, else llama_decode's code.
    int decode(const MediaSpan & span, std::vector<float> & embd, llama_context * lctx, llama_pos n_past, int seq,
               int n_batch);

  private:
    ModelPtr model_;
    std::string path_;
    mtmd_context * ctx_ = nullptr;
    bool mrope_ = false;
};

using ProjectorPtr = std::shared_ptr<Projector>;

}  // namespace a3s
