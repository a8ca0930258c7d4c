// One context over a Model, with N slots (one llama_seq_id each) and one inference thread that
// runs continuous batching: each step decodes one batch holding the next token of every
// generating slot and prompt chunks of slots still prefilling. Python submits requests and
// drains their output; it never runs per-token work.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lora.h"
#include "mailbox.h"
#include "parallel.h"
#include "model.h"
#include "notifier.h"
#include "prompt_cache.h"
#include "sampling.h"
#include "text_stream.h"
#include "vision.h"

namespace a3s {

struct ContextParams {
    int n_ctx = 2048;  // num_ctx: tokens each slot may hold
    int n_batch = 512;
    int n_ubatch = 512;
    int n_parallel = 1;  // slots
    int n_threads = 0;   // 0 = all cores
    int n_threads_batch = 0;
    std::string flash_attn = "auto";  // auto | on | off
    std::string type_k = "f16";       // f16 | q8_0 | q4_0 | f32 | bf16
    std::string type_v = "f16";
    bool embeddings = false;  // an embedding context serves embed requests only
    // One KV buffer for every slot: a prefix is shared between slots without a copy, but every
    // slot's attention spans every cached cell, idle slots' included. Otherwise each slot has a
    // buffer of its own and attends only to its own cells.
    bool kv_unified = false;
    // The least time between two wake-ups of the consumer's event loop. Tokens that come sooner
    // are delivered together with the next ones; a first token and a finished request never wait.
    // Fast models then cost the consumer one wake-up per few tokens instead of one per token.
    int stream_interval_ms = 0;
    // How much lower than the process the inference thread (and the compute threads it starts)
    // runs. It takes every core while it decodes; lowered, it still gets them whenever nothing
    // else wants them, but the HTTP thread beside it answers at once. Linux only.
    int nice = 0;
    // Host memory for conversations pushed out of their slot (PromptCache); 0 keeps none.
    int prompt_cache_mb = 0;
    // Its disk tier (PromptDisk): a folder for this model and KV layout, and its bound; conversations
    // leave memory for it, and every slot's is written there when the engine closes. Empty: none.
    std::string prompt_cache_dir;
    int prompt_cache_disk_mb = 0;
    // Tokens picked inside the decode graph where a request's options allow (backend_chain_key).
    // Off by default: on an H200 it made every step slower, one stream and 64 alike (the chains'
    // nodes are built into each step's graph, one set per slot; benchmarks/README.md).
    bool backend_sampling = false;
};

// One generation request. Its defaults are the only ones: Python reads them from _core.GenerateParams()
// (the prompt and media are submit()'s own arguments there).
struct GenerateParams {
    std::vector<llama_token> prompt;  // with media placeholders where `media` says
    std::vector<MediaSpan> media;
    int num_predict = -1;  // < 0: until end of generation or the context is full
    std::vector<std::string> stop;
    bool logprobs = false;
    int top_logprobs = 0;
    SamplingParams sampling;
    // When the slot's context fills during generation: drop the older half of what follows the
    // first num_keep tokens and go on (Ollama's shift), or end with "length".
    bool shift = true;
    int num_keep = 4;
};

struct Request;

struct Slot {
    int seq = 0;
    std::shared_ptr<Request> req;
    std::vector<llama_token> cache;  // tokens whose KV cells this sequence holds
    size_t shared = 0;  // leading cells possibly shared with another slot's sequence (see assign)
    uint64_t last_used = 0;
    int batch_from = 0;  // this step: where the slot's tokens start in the batch
    int batch_count = 0;
    // Under M-RoPE an image takes fewer positions than cells: (cache index just past an image,
    // positions saved by every image up to there), in order. Empty for every other model.
    std::vector<std::pair<size_t, size_t>> squeezed;
    // This step's pick, made beside the other slots' (see Engine::after_decode).
    const float * logits = nullptr;
    llama_token picked = -1;
    TokenLogprob picked_logprob;
    // The chain llama.cpp runs for this sequence inside the decode graph, if any, and its key.
    // It stays attached between requests that want the same one: attaching makes llama.cpp
    // rebuild its graph reservation.
    llama_sampler * backend = nullptr;
    std::string backend_key;
};

struct EngineStats {
    int slots = 0;
    int slots_busy = 0;
    int queued = 0;
    uint64_t steps = 0;
    size_t prompt_cache_bytes = 0;
    // Conversations the prompt cache copied out of their slots, copied back, and let go without a
    // copy because few came back (PromptCache::Counts).
    uint64_t prompt_cache_saved = 0;
    uint64_t prompt_cache_restored = 0;
    uint64_t prompt_cache_skipped = 0;
    uint64_t prompt_cache_from_disk = 0;  // of the restored, those read from its disk tier
    size_t prompt_cache_disk_bytes = 0;
    // Where the engine's thread spent its time, summed over steps (ns): in llama_decode until the
    // device finished it, picking tokens and publishing them after it, and everything else on
    // the thread (admitting requests, media, building the batch). On a GPU the device is idle
    // during the last two: they are what a step costs beyond the model.
    uint64_t decode_ns = 0;
    uint64_t sample_ns = 0;
    uint64_t other_ns = 0;
    uint64_t device_picks = 0;  // tokens picked inside the decode graph (backend sampling)
};

class Engine {
  public:
    Engine(ModelPtr model, const ContextParams & params, std::vector<std::pair<LoraPtr, float>> adapters = {},
           ProjectorPtr projector = nullptr);
    ~Engine();
    Engine(const Engine &) = delete;
    Engine & operator=(const Engine &) = delete;

    uint64_t submit(GenerateParams params);
    uint64_t submit_embedding(std::vector<llama_token> tokens, bool normalize);
    void cancel(uint64_t id);

    // Output of every request that has some, waiting up to timeout_ms (0 = don't wait, < 0 = forever).
    std::vector<Event> drain(int timeout_ms);
    int notify_fd() const { return mailbox_.fd(); }

    EngineStats stats();
    // Each slot as the last step left it, in the spirit of llama-server's /slots.
    struct SlotView {
        int id = 0;
        bool busy = false;
        int64_t cached_tokens = 0;  // tokens whose KV cells the slot holds
        int64_t generated = 0;      // tokens its current request has generated
    };
    std::vector<SlotView> slot_views();
    // Empties the host-memory prompt cache, from any thread: a cache gives way before a model is
    // evicted to make room. Returns the bytes it held.
    size_t release_prompt_cache();
    const ContextParams & params() const { return params_; }
    int n_ctx_total() const;
    const ModelPtr & model() const { return model_; }
    const ProjectorPtr & projector() const { return projector_; }
    void close();

  private:
    void run();
    void admit_waiting();
    void assign(Slot & slot, std::shared_ptr<Request> req);
    void prefill_media(std::vector<Event> & out);
    int build_batch(int budget);
    void after_decode();
    void decode_image(Slot & slot, const MediaSpan & span, const std::vector<float> & embd);
    void attach_backend_chain(Slot & slot, const Request & req);
    void detach_backend_chain(Slot & slot);
    void pick(Slot & slot);
    void take_pick(Slot & slot, std::vector<Event> & out);
    void finish(Slot & slot, const std::string & reason, const std::string & error, std::vector<Event> & out);
    void forget(Slot & slot, size_t from);
    bool shift_context(Slot & slot);
    void fail_batch(const std::string & error, std::vector<Event> & out);
    void publish(std::vector<Event> & events, bool urgent);
    Event & event_for(std::vector<Event> & out, uint64_t id);
    static bool should_abort(void * data);

    ModelPtr model_;
    ContextParams params_;
    std::vector<std::pair<LoraPtr, float>> adapters_;  // kept alive while the context uses them
    ProjectorPtr projector_;
    llama_context * ctx_ = nullptr;
    llama_memory_t mem_ = nullptr;
    llama_batch batch_{};
    int n_batch_ = 0;
    bool can_reuse_prefix_ = true;
    // The projector places images on M-RoPE's grid: positions are not cache indices past an image
    // (Slot::squeezed), so a slot's cells are never copied to another slot or the prompt cache.
    bool mrope_ = false;
    std::vector<Slot> slots_;
    std::unique_ptr<PromptCache> prompt_cache_;
    // Picks the slots' tokens side by side: each slot's sampler is its own, and on a GPU the
    // device waits while the host picks (64 slots over a 128k vocabulary: milliseconds a step).
    std::unique_ptr<ParallelFor> pickers_;
    std::vector<Slot *> to_sample_;
    std::vector<Slot *> host_picks_;  // of to_sample_, those whose chain runs here
    std::mutex prompt_cache_mutex_;  // the inference thread's use of prompt_cache_ against release
    std::atomic<size_t> prompt_cache_bytes_{0};
    std::atomic<uint64_t> prompt_cache_saved_{0}, prompt_cache_restored_{0}, prompt_cache_skipped_{0},
        prompt_cache_from_disk_{0}, prompt_cache_disk_bytes_{0};
    void note_prompt_cache();  // copies its figures for stats(), with prompt_cache_mutex_ held
    void note_slots();  // copies each slot's figures for slot_views(), on the inference thread
    std::mutex slot_views_mutex_;
    std::vector<SlotView> slot_views_;
    std::vector<Slot *> in_batch_;
    uint64_t clock_ = 0;

    std::mutex queue_mutex_;
    std::condition_variable queue_cv_;
    std::deque<std::shared_ptr<Request>> queue_;
    std::map<uint64_t, std::shared_ptr<Request>> live_;  // queued or in a slot, for cancel()
    std::atomic<uint64_t> next_id_{1};
    std::atomic<bool> stopping_{false};
    std::atomic<int> busy_{0};
    std::atomic<uint64_t> steps_{0};
    std::atomic<uint64_t> decode_ns_{0}, sample_ns_{0}, other_ns_{0}, device_picks_{0};

    Mailbox mailbox_;

    // The inference thread runs while there is work and ends after kIdleExit without any, if
    // another engine's thread is alive:
    // llama.cpp's OpenMP gives each thread that computes a team of workers for as long as it
    // lives, and once a process holds more of them than CPUs, libgomp stops them spinning
    // between steps. An idle model's team would slow every other model's decode (4x on a small
    // model here); the next request starts a new thread.
    void start_thread_locked();  // with queue_mutex_ held
    bool thread_running_ = false;  // guarded by queue_mutex_
    std::thread thread_;
};

}  // namespace a3s
