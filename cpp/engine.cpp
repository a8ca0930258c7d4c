#include "engine.h"

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "errors.h"
#include "log.h"
#include "tokens.h"

#ifdef __linux__
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace a3s {

struct Request {
    uint64_t id = 0;
    bool embedding = false;
    bool normalize = true;
    GenerateParams params;
    std::atomic<bool> cancelled{false};

    // Set while the request holds a slot.
    std::unique_ptr<Sampler> sampler;
    std::unique_ptr<TextStream> text;
    size_t prompt_done = 0;  // prompt tokens already in the slot's KV cache
    bool prompt_started = false;
    bool generating = false;
    llama_token next_token = -1;  // sampled, to be evaluated in the next step
    int n_generated = 0;
    Timings timings;
    std::chrono::steady_clock::time_point t_prompt_start, t_prompt_end;
};

namespace {

using clock_type = std::chrono::steady_clock;

// A conversation this long (in tokens) is worth keeping when it leaves its slot (PromptCache).
constexpr size_t kWorthKeeping = 64;

int64_t ns_between(clock_type::time_point a, clock_type::time_point b) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
}

ggml_type parse_cache_type(const std::string & option, const std::string & name) {
    if (name == "f16") return GGML_TYPE_F16;
    if (name == "f32") return GGML_TYPE_F32;
    if (name == "bf16") return GGML_TYPE_BF16;
    if (name == "q8_0") return GGML_TYPE_Q8_0;
    if (name == "q4_0") return GGML_TYPE_Q4_0;
    throw_invalid_option(option, "'" + name + "' is not one of f16, q8_0, q4_0, f32, bf16");
}

llama_flash_attn_type parse_flash_attn(const std::string & v) {
    if (v == "auto") return LLAMA_FLASH_ATTN_TYPE_AUTO;
    if (v == "on" || v == "true" || v == "enabled") return LLAMA_FLASH_ATTN_TYPE_ENABLED;
    if (v == "off" || v == "false" || v == "disabled") return LLAMA_FLASH_ATTN_TYPE_DISABLED;
    throw_invalid_option("flash_attention", "'" + v + "' is not one of auto, on, off");
}

int default_threads() {
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 4 : int(n);
}

void validate(const ContextParams & p) {
    if (p.n_ctx <= 0) throw_invalid_option("num_ctx", "must be positive, got " + std::to_string(p.n_ctx));
    if (p.n_batch <= 0) throw_invalid_option("num_batch", "must be positive, got " + std::to_string(p.n_batch));
    if (p.n_ubatch <= 0) throw_invalid_option("num_ubatch", "must be positive, got " + std::to_string(p.n_ubatch));
    if (p.n_parallel <= 0 || size_t(p.n_parallel) > llama_max_parallel_sequences()) {
        throw_invalid_option("num_parallel", "must be between 1 and " + std::to_string(llama_max_parallel_sequences()) +
                                                 ", got " + std::to_string(p.n_parallel));
    }
    if (p.n_threads < 0) throw_invalid_option("num_thread", "must not be negative, got " + std::to_string(p.n_threads));
    if (p.n_threads_batch < 0) {
        throw_invalid_option("num_thread_batch", "must not be negative, got " + std::to_string(p.n_threads_batch));
    }
}

void l2_normalize(std::vector<float> & v) {
    double sum = 0.0;
    for (float x : v) sum += double(x) * x;
    const double norm = std::sqrt(sum);
    if (norm > 0.0) {
        for (float & x : v) x = float(x / norm);
    }
}

// The position of the cell at cache index `i` (where the next token goes, for i = cache size).
llama_pos pos_at(const Slot & slot, size_t i) {
    size_t saved = 0;
    for (const auto & [end, total] : slot.squeezed) {
        if (end > i) break;
        saved = total;
    }
    return llama_pos(i - saved);
}

// Drops what Slot::squeezed says of images past the end of the slot's cache.
void trim_squeezed(Slot & slot) {
    while (!slot.squeezed.empty() && slot.squeezed.back().first > slot.cache.size()) slot.squeezed.pop_back();
}

// Lowers the calling thread's priority by `nice` (defined below, with why).
void make_this_thread_background(int nice);

}  // namespace

Engine::Engine(ModelPtr model, const ContextParams & params, std::vector<std::pair<LoraPtr, float>> adapters,
               ProjectorPtr projector)
    : model_(std::move(model)),
      params_(params),
      adapters_(std::move(adapters)),
      projector_(std::move(projector)),
      mailbox_(params.stream_interval_ms) {
    if (projector_ && projector_->model().get() != model_.get()) {
        throw Error(ErrorKind::InvalidOption, "the projector was loaded for another model");
    }
    for (const auto & [adapter, scale] : adapters_) {
        if (!adapter || adapter->base().get() != model_.get()) {
            throw Error(ErrorKind::InvalidOption, "a LoRA adapter was loaded over another model");
        }
    }
    validate(params_);
    llama_model * m = model_->get();

    llama_context_params cp = llama_context_default_params();
    const int n_threads = params_.n_threads > 0 ? params_.n_threads : default_threads();
    cp.n_threads = n_threads;
    cp.n_threads_batch = params_.n_threads_batch > 0 ? params_.n_threads_batch : n_threads;
    cp.n_seq_max = uint32_t(params_.n_parallel);
    cp.flash_attn_type = parse_flash_attn(params_.flash_attn);
    cp.type_k = parse_cache_type("kv_cache_type", params_.type_k);
    cp.type_v = parse_cache_type("kv_cache_type", params_.type_v);
    cp.kv_unified = params_.kv_unified;
    cp.no_perf = true;
    cp.abort_callback = &Engine::should_abort;
    cp.abort_callback_data = this;
    if (params_.embeddings) {
        // A non-causal model must see a whole input in one micro-batch.
        // Inputs are evaluated whole and never cached: one buffer of num_ctx serves them all.
        cp.embeddings = true;
        cp.kv_unified = true;
        cp.n_ctx = uint32_t(params_.n_ctx);
        cp.n_batch = cp.n_ubatch = uint32_t(params_.n_ctx);
    } else {
        cp.n_ctx = uint32_t(params_.n_ctx) * uint32_t(params_.n_parallel);
        cp.n_batch = uint32_t(std::max(params_.n_batch, params_.n_parallel));
        cp.n_ubatch = uint32_t(std::min<int>(params_.n_ubatch, cp.n_batch));
        // A step asks one output of each sequence (its last token), and a chain's buffers on the
        // device are sized by this.
        if (params_.backend_sampling) cp.n_outputs_max_per_seq = 1;
    }

    take_thread_log_errors();
    ctx_ = llama_init_from_model(m, cp);
    if (!ctx_) {
        std::string why = take_thread_log_errors();
        throw Error(ErrorKind::ModelLoad,
                    "failed to create a context for " + model_->path() + ": " + (why.empty() ? "unknown reason" : why));
    }
    if (!adapters_.empty()) {
        std::vector<llama_adapter_lora *> ptrs;
        std::vector<float> scales;
        for (const auto & [adapter, scale] : adapters_) {
            ptrs.push_back(adapter->get());
            scales.push_back(scale);
        }
        if (llama_set_adapters_lora(ctx_, ptrs.data(), ptrs.size(), scales.data()) != 0) {
            llama_free(ctx_);
            ctx_ = nullptr;
            throw Error(ErrorKind::ModelLoad, "failed to apply LoRA adapters to " + model_->path());
        }
    }
    mem_ = llama_get_memory(ctx_);
    n_batch_ = int(llama_n_batch(ctx_));
    batch_ = llama_batch_init(n_batch_, 0, 1);
    can_reuse_prefix_ = !params_.embeddings && mem_ != nullptr && !model_->is_recurrent() && model_->n_swa() == 0;

    slots_.resize(params_.n_parallel);
    for (int i = 0; i < params_.n_parallel; ++i) slots_[i].seq = i;
    note_slots();
    mrope_ = projector_ && projector_->mrope();
    if (can_reuse_prefix_ && params_.prompt_cache_mb > 0 && !mrope_) {
        std::unique_ptr<PromptDisk> disk;
        if (!params_.prompt_cache_dir.empty() && params_.prompt_cache_disk_mb > 0) {
            disk = std::make_unique<PromptDisk>(params_.prompt_cache_dir, size_t(params_.prompt_cache_disk_mb) << 20);
        }
        prompt_cache_ = std::make_unique<PromptCache>(size_t(params_.prompt_cache_mb) << 20, std::move(disk));
        note_prompt_cache();
    }
    // The compute threads are idle while tokens are picked: as many pick beside the engine's
    // thread, up to 8 in all (beyond that a step's picks are too short to share out).
    constexpr int kMaxPickers = 8;
    const int pickers = params_.embeddings ? 1 : std::min({params_.n_parallel, n_threads, kMaxPickers});
    const int nice = params_.nice;
    pickers_ = std::make_unique<ParallelFor>(std::max(pickers - 1, 0), [nice] { make_this_thread_background(nice); });
}

Engine::~Engine() { close(); }

void Engine::start_thread_locked() {
    if (thread_running_) return;
    if (thread_.joinable()) thread_.join();  // the last one, ended while idle: it holds no lock
    thread_running_ = true;
    thread_ = std::thread([this] { run(); });
}

void Engine::close() {
    {
        // Under the lock, or the thread could test the flag, miss this notify, and sleep forever.
        std::lock_guard<std::mutex> lk(queue_mutex_);
        if (stopping_) return;  // closed already: only close() sets it
        stopping_ = true;
    }
    queue_cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (prompt_cache_) {  // what the slots hold goes to the disk tier, to come back after a restart
        std::lock_guard<std::mutex> lk(prompt_cache_mutex_);
        for (const Slot & slot : slots_) {
            if (slot.cache.size() >= kWorthKeeping) prompt_cache_->keep_on_disk(ctx_, slot.seq, slot.cache);
        }
    }
    llama_batch_free(batch_);
    llama_free(ctx_);
    ctx_ = nullptr;
    for (Slot & slot : slots_) {  // after the context that ran them
        if (slot.backend) llama_sampler_free(slot.backend);
        slot.backend = nullptr;
    }
    release_prompt_cache();  // its memory goes with the model, not with the last Python reference
}

int Engine::n_ctx_total() const { return ctx_ ? int(llama_n_ctx(ctx_)) : 0; }

uint64_t Engine::submit(GenerateParams params) {
    if (params_.embeddings) throw Error(ErrorKind::InvalidOption, "this model was loaded for embeddings only");
    if (params.prompt.empty()) throw Error(ErrorKind::InvalidOption, "the prompt has no tokens");
    if (params.prompt.size() >= size_t(params_.n_ctx)) {
        throw Error(ErrorKind::InvalidOption, "the prompt has " + std::to_string(params.prompt.size()) +
                                                  " tokens, more than the context allows (num_ctx " +
                                                  std::to_string(params_.n_ctx) + ")");
    }
    if (params.top_logprobs < 0 || params.top_logprobs > 20) {
        throw_invalid_option("top_logprobs", "must be between 0 and 20");
    }
    const int n_vocab = model_->n_vocab();
    std::vector<bool> in_media(params.prompt.size(), false);
    if (!params.media.empty() && !projector_) {
        throw Error(ErrorKind::InvalidOption, "this model cannot take images: it has no vision projector");
    }
    for (const auto & span : params.media) {
        if (span.start + span.n_tokens > params.prompt.size() || !span.chunk) {
            throw Error(ErrorKind::InvalidOption, "an image lies outside the prompt");
        }
        if (span.start + span.n_tokens == params.prompt.size()) {
            throw Error(ErrorKind::InvalidOption, "the prompt must not end with an image");
        }
        std::fill(in_media.begin() + long(span.start), in_media.begin() + long(span.start + span.n_tokens), true);
    }
    for (size_t i = 0; i < params.prompt.size(); ++i) {
        const llama_token t = params.prompt[i];
        if (in_media[i] ? !is_media_placeholder(t) : (t < 0 || t >= n_vocab)) {
            throw Error(ErrorKind::InvalidOption, "token id " + std::to_string(t) + " is outside the vocabulary");
        }
    }
    auto req = std::make_shared<Request>();
    // Built here so a bad grammar or option fails the call, not the inference thread.
    req->sampler = std::make_unique<Sampler>(model_->get(), params.sampling, params_.n_ctx);
    req->text = std::make_unique<TextStream>(params.stop);
    req->params = std::move(params);
    req->id = next_id_++;
    {
        std::lock_guard<std::mutex> lk(queue_mutex_);
        if (stopping_) throw Error(ErrorKind::Inference, "the engine is closed");
        queue_.push_back(req);
        live_[req->id] = req;
        start_thread_locked();
    }
    queue_cv_.notify_one();
    return req->id;
}

uint64_t Engine::submit_embedding(std::vector<llama_token> tokens, bool normalize) {
    if (!params_.embeddings) throw Error(ErrorKind::InvalidOption, "this model was not loaded for embeddings");
    if (tokens.empty()) throw Error(ErrorKind::InvalidOption, "the input has no tokens");
    if (tokens.size() > size_t(params_.n_ctx)) {
        throw Error(ErrorKind::InvalidOption, "the input has " + std::to_string(tokens.size()) +
                                                  " tokens, more than the context allows (num_ctx " +
                                                  std::to_string(params_.n_ctx) + ")");
    }
    auto req = std::make_shared<Request>();
    req->embedding = true;
    req->normalize = normalize;
    req->params.prompt = std::move(tokens);
    req->id = next_id_++;
    {
        std::lock_guard<std::mutex> lk(queue_mutex_);
        if (stopping_) throw Error(ErrorKind::Inference, "the engine is closed");
        queue_.push_back(req);
        live_[req->id] = req;
        start_thread_locked();
    }
    queue_cv_.notify_one();
    return req->id;
}

void Engine::cancel(uint64_t id) {
    {
        std::lock_guard<std::mutex> lk(queue_mutex_);
        auto it = live_.find(id);
        if (it == live_.end()) return;
        it->second->cancelled = true;
    }
    queue_cv_.notify_one();
}

EngineStats Engine::stats() {
    EngineStats s;
    s.slots = params_.n_parallel;
    s.slots_busy = busy_.load();
    s.steps = steps_.load();
    s.decode_ns = decode_ns_.load();
    s.sample_ns = sample_ns_.load();
    s.other_ns = other_ns_.load();
    s.device_picks = device_picks_.load();
    s.prompt_cache_bytes = prompt_cache_bytes_.load();
    s.prompt_cache_saved = prompt_cache_saved_.load();
    s.prompt_cache_restored = prompt_cache_restored_.load();
    s.prompt_cache_skipped = prompt_cache_skipped_.load();
    s.prompt_cache_from_disk = prompt_cache_from_disk_.load();
    s.prompt_cache_disk_bytes = prompt_cache_disk_bytes_.load();
    std::lock_guard<std::mutex> lk(queue_mutex_);
    s.queued = int(queue_.size());
    return s;
}

std::vector<Engine::SlotView> Engine::slot_views() {
    std::lock_guard<std::mutex> lk(slot_views_mutex_);
    return slot_views_;
}

void Engine::note_slots() {
    std::lock_guard<std::mutex> lk(slot_views_mutex_);
    slot_views_.resize(slots_.size());
    for (size_t i = 0; i < slots_.size(); ++i) {
        const Slot & s = slots_[i];
        slot_views_[i] = SlotView{int(i), s.req != nullptr, int64_t(s.cache.size()), s.req ? s.req->n_generated : 0};
    }
}

size_t Engine::release_prompt_cache() {
    if (!prompt_cache_) return 0;
    std::lock_guard<std::mutex> lk(prompt_cache_mutex_);
    const size_t freed = prompt_cache_->clear();
    note_prompt_cache();
    return freed;
}

void Engine::note_prompt_cache() {
    prompt_cache_bytes_ = prompt_cache_->bytes();
    prompt_cache_disk_bytes_ = prompt_cache_->disk_bytes();
    const auto counts = prompt_cache_->counts();
    prompt_cache_saved_ = counts.saved;
    prompt_cache_restored_ = counts.restored;
    prompt_cache_skipped_ = counts.skipped;
    prompt_cache_from_disk_ = counts.from_disk;
}

bool Engine::should_abort(void * data) {
    auto * self = static_cast<Engine *>(data);
    if (self->stopping_.load(std::memory_order_relaxed)) return true;
    if (self->in_batch_.empty()) return false;
    for (Slot * s : self->in_batch_) {
        if (!s->req->cancelled.load(std::memory_order_relaxed)) return false;
    }
    return true;  // nobody is waiting for this batch any more
}

// ---------------------------------------------------------------------------------------------
// The inference thread

namespace {

constexpr auto kIdleExit = std::chrono::seconds(2);
// Inference threads alive in this process: an idle one ends only while others exist, so that a
// lone model's next request does not pay for a new thread and OpenMP team (about 10 ms).
std::atomic<int> g_inference_threads{0};

// Decoding is throughput work and the HTTP thread beside it is latency work. On Linux a thread id
// gets its own niceness and scheduler slice, and threads it creates later (llama.cpp's OpenMP
// workers) inherit both. Lower priority alone still left a woken HTTP thread waiting for the next
// tick (4 ms at HZ=250) behind a compute thread whose slice had not run out; a compute thread
// with a long slice is preempted at once by any woken thread with a shorter one (EEVDF, Linux
// 6.12+; older kernels ignore the slice and keep the niceness).
constexpr uint64_t kBackgroundSliceNs = 20'000'000;

void make_this_thread_background(int nice) {
#ifdef __linux__
    if (nice <= 0) return;
    const auto tid = static_cast<pid_t>(syscall(SYS_gettid));
    errno = 0;
    const int current = getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
    if (errno != 0) return;
    const int lowered = std::min(current + nice, 19);
    const int policy = sched_getscheduler(tid);
    if (policy == SCHED_OTHER || policy == SCHED_BATCH) {
        struct {  // struct sched_attr, first version (48 bytes); glibc has no wrapper for it
            uint32_t size, sched_policy;
            uint64_t sched_flags;
            int32_t sched_nice;
            uint32_t sched_priority;
            uint64_t sched_runtime, sched_deadline, sched_period;
        } attr{48, static_cast<uint32_t>(policy), 0, lowered, 0, kBackgroundSliceNs, 0, 0};
        if (syscall(SYS_sched_setattr, tid, &attr, 0) == 0) return;
    }
    setpriority(PRIO_PROCESS, static_cast<id_t>(tid), lowered);
#else
    (void)nice;
#endif
}

}  // namespace

void Engine::run() {
    g_inference_threads++;
    make_this_thread_background(params_.nice);
    int budget = n_batch_;
    std::vector<Event> out;
    while (true) {
        {
            std::unique_lock<std::mutex> lk(queue_mutex_);
            const bool work = queue_cv_.wait_for(lk, kIdleExit, [&] {
                return stopping_ || !queue_.empty() || busy_.load() > 0;
            });
            if (stopping_) break;
            if (!work) {
                if (g_inference_threads.load() == 1) continue;
                thread_running_ = false;
                g_inference_threads--;
                return;
            }
        }
        const auto t_step = clock_type::now();
        admit_waiting();

        // Requests cancelled while in a slot leave before the batch is built.
        for (Slot & slot : slots_) {
            if (slot.req && slot.req->cancelled) finish(slot, "cancel", "", out);
        }
        if (!out.empty()) publish(out, true);

        prefill_media(out);
        if (!out.empty()) publish(out, true);
        const int n = build_batch(budget);
        if (n == 0) continue;

        hold_thread_log();
        const auto t_decode = clock_type::now();
        const int rc = llama_decode(ctx_, batch_);
        release_thread_log(rc != 2);
        steps_++;
        if (rc == 0) {
            budget = n_batch_;
            // On a GPU llama_decode returns once the work is queued: wait for it, so that what
            // follows is timed apart from the device's work.
            llama_synchronize(ctx_);
            const auto t_sample = clock_type::now();
            after_decode();
            const auto t_end = clock_type::now();
            other_ns_ += uint64_t(ns_between(t_step, t_decode));
            decode_ns_ += uint64_t(ns_between(t_decode, t_sample));
            sample_ns_ += uint64_t(ns_between(t_sample, t_end));
            continue;
        }
        // The batch did not go through: drop whatever part of it reached the KV cache, so every
        // slot is exactly as it was before this step.
        for (Slot * s : in_batch_) forget(*s, s->cache.size());
        if (rc == 2) {  // aborted: the slots were cancelled, or we are closing
            in_batch_.clear();
            continue;
        }
        if (rc == 1 && budget > 1) {  // no room in the KV cache for so many tokens at once
            budget /= 2;
            in_batch_.clear();
            continue;
        }
        fail_batch("llama_decode failed with code " + std::to_string(rc), out);
        publish(out, true);
        budget = n_batch_;
    }

    // Closing: whoever still waits learns so.
    std::vector<std::shared_ptr<Request>> left;
    {
        std::lock_guard<std::mutex> lk(queue_mutex_);
        left.assign(queue_.begin(), queue_.end());
        queue_.clear();
    }
    for (Slot & slot : slots_) {
        if (slot.req) finish(slot, "cancel", "", out);
    }
    for (auto & req : left) {
        Event & e = event_for(out, req->id);
        e.done = true;
        e.done_reason = "cancel";
    }
    publish(out, true);
    g_inference_threads--;
}

void Engine::admit_waiting() {
    std::vector<Event> out;
    std::unique_lock<std::mutex> lk(queue_mutex_);
    // Cancelled before they got a slot: answer them right away.
    for (auto it = queue_.begin(); it != queue_.end();) {
        if ((*it)->cancelled) {
            Event & e = event_for(out, (*it)->id);
            e.done = true;
            e.done_reason = "cancel";
            live_.erase((*it)->id);
            it = queue_.erase(it);
        } else {
            ++it;
        }
    }
    while (!queue_.empty()) {
        auto req = queue_.front();
        // The idle slot whose cache shares the longest prefix with the prompt; ties go to the
        // least recently used, so a conversation tends to come back to its own slot.
        Slot * best = nullptr;
        size_t best_common = 0;
        for (Slot & slot : slots_) {
            if (slot.req) continue;
            const size_t common =
                can_reuse_prefix_ && !req->embedding ? common_prefix(slot.cache, req->params.prompt) : 0;
            if (!best || common > best_common || (common == best_common && slot.last_used < best->last_used)) {
                best = &slot;
                best_common = common;
            }
        }
        if (!best) break;
        queue_.pop_front();
        lk.unlock();
        assign(*best, std::move(req));
        lk.lock();
    }
    lk.unlock();
    if (!out.empty()) publish(out, true);
}

namespace {

// Where a cached prefix may end for this prompt: never after its last token (whose logits are
// needed) and never inside an image, whose embeddings go in whole.
size_t usable_prefix(size_t common, const std::vector<llama_token> & prompt) {
    if (common == prompt.size()) --common;
    while (common > 0 && is_media_placeholder(prompt[common]) && prompt[common - 1] == prompt[common]) --common;
    return common;
}

}  // namespace

void Engine::assign(Slot & slot, std::shared_ptr<Request> req) {
    const auto & prompt = req->params.prompt;
    size_t common = 0;
    if (can_reuse_prefix_ && !req->embedding) {
        std::unique_lock<std::mutex> cache_lock(prompt_cache_mutex_, std::defer_lock);
        if (prompt_cache_) cache_lock.lock();
        common = usable_prefix(common_prefix(slot.cache, prompt), prompt);
        // What the slot holds past the common part is about to go: a conversation long enough to
        // be worth it is kept in host memory for its next turn.
        if (prompt_cache_ && slot.cache.size() >= common + kWorthKeeping) {
            prompt_cache_->save(ctx_, slot.seq, slot.cache);
        }
        if (!llama_memory_seq_rm(mem_, slot.seq, pos_at(slot, common), -1)) common = 0;
        slot.shared = std::min(slot.shared, common);

        // Another slot, or the host-memory cache, may hold a longer prefix (a shared system
        // prompt, a conversation that lost its slot): copied, it need not be evaluated again.
        const Slot * donor = nullptr;
        size_t donor_common = common;
        for (const Slot & other : slots_) {
            if (&other == &slot || mrope_) continue;
            const size_t c = usable_prefix(common_prefix(other.cache, prompt), prompt);
            if (c > donor_common) {
                donor = &other;
                donor_common = c;
            }
        }
        PromptCache::Match kept;
        if (prompt_cache_) {
            prompt_cache_->note_prompt(prompt);
            kept = prompt_cache_->best(prompt);
            kept.common = usable_prefix(kept.common, prompt);
        }
        constexpr size_t kWorthCopying = 16;
        if (kept.index >= 0 && kept.common >= std::max(common, donor_common) + kWorthCopying) {
            llama_memory_seq_rm(mem_, slot.seq, -1, -1);
            slot.shared = 0;
            if (prompt_cache_->restore(ctx_, kept, slot.seq)) {
                llama_memory_seq_rm(mem_, slot.seq, llama_pos(kept.common), -1);
                slot.cache.assign(prompt.begin(), prompt.begin() + long(kept.common));
                common = kept.common;
            } else {
                common = 0;
            }
        } else if (donor && donor_common >= common + kWorthCopying) {
            llama_memory_seq_rm(mem_, slot.seq, -1, -1);
            if (params_.kv_unified) {
                // One buffer: the donor's cells are referenced by this sequence too.
                llama_memory_seq_cp(mem_, donor->seq, slot.seq, 0, llama_pos(donor_common));
                slot.shared = donor_common;
                const_cast<Slot *>(donor)->shared = std::max(donor->shared, donor_common);
            } else {
                // A buffer per slot: llama.cpp copies the donor's whole stream (before the next
                // decode), and what follows the common prefix is dropped again.
                llama_memory_seq_cp(mem_, donor->seq, slot.seq, -1, -1);
                llama_memory_seq_rm(mem_, slot.seq, llama_pos(donor_common), -1);
                slot.shared = 0;
            }
            slot.cache.assign(prompt.begin(), prompt.begin() + long(donor_common));
            common = donor_common;
        }
        if (prompt_cache_) note_prompt_cache();
    }
    if (common == 0) forget(slot, 0);
    slot.cache.resize(common);
    trim_squeezed(slot);
    req->prompt_done = common;
    req->timings.prompt_tokens = int64_t(prompt.size());
    req->timings.cached_tokens = int64_t(common);
    if (!req->embedding) attach_backend_chain(slot, *req);
    slot.req = std::move(req);
    slot.last_used = ++clock_;
    busy_++;
}

// Before the request's first token: its chain goes into the graph, or the host picks for it.
void Engine::attach_backend_chain(Slot & slot, const Request & req) {
    if (!params_.backend_sampling || params_.embeddings) return;
    const auto & sp = req.params.sampling;
    const std::string key = backend_chain_key(sp, req.params.logprobs);
    // An equal chain is kept, but one with a seed starts its random numbers afresh.
    if (!key.empty() && key == slot.backend_key && (sp.seed < 0 || sp.temperature <= 0.0)) return;
    detach_backend_chain(slot);
    if (key.empty()) return;
    llama_sampler * chain = make_backend_chain(sp, model_->n_vocab());
    if (!llama_set_sampler(ctx_, slot.seq, chain)) {  // the backend cannot run it: the host picks
        llama_set_sampler(ctx_, slot.seq, nullptr);
        llama_sampler_free(chain);
        return;
    }
    slot.backend = chain;
    slot.backend_key = key;
}

void Engine::detach_backend_chain(Slot & slot) {
    if (!slot.backend) return;
    llama_set_sampler(ctx_, slot.seq, nullptr);
    llama_sampler_free(slot.backend);
    slot.backend = nullptr;
    slot.backend_key.clear();
}

// One position per embedding, from the slot's next one on, in n_batch pieces.
void Engine::decode_image(Slot & slot, const MediaSpan & span, const std::vector<float> & embd) {
    const int n_embd = llama_model_n_embd_inp(model_->get());
    llama_batch batch = llama_batch_init(n_batch_, n_embd, 1);
    if (span.non_causal) llama_set_causal_attn(ctx_, false);
    int rc = 0;
    for (size_t i = 0; i < span.n_tokens && rc == 0; i += size_t(n_batch_)) {
        const int n = int(std::min<size_t>(size_t(n_batch_), span.n_tokens - i));
        std::memcpy(batch.embd, embd.data() + i * size_t(n_embd), sizeof(float) * size_t(n) * size_t(n_embd));
        for (int k = 0; k < n; ++k) {
            batch.pos[k] = llama_pos(slot.cache.size() + i + size_t(k));
            batch.n_seq_id[k] = 1;
            batch.seq_id[k][0] = slot.seq;
            batch.logits[k] = false;
        }
        batch.n_tokens = n;
        rc = llama_decode(ctx_, batch);
    }
    if (span.non_causal) llama_set_causal_attn(ctx_, true);
    llama_batch_free(batch);
    if (rc != 0) throw Error(ErrorKind::Inference, "decoding an image failed with code " + std::to_string(rc));
}

// Images are decoded outside the shared batch, one slot at a time: the vision encoder's output
// goes into the slot's sequence as embeddings, in n_batch pieces, as llama.cpp's own tools do.
void Engine::prefill_media(std::vector<Event> & out) {
    if (!projector_) return;
    for (Slot & slot : slots_) {
        if (!slot.req || slot.req->generating || slot.req->cancelled) continue;
        Request & req = *slot.req;
        for (const auto & span : req.params.media) {
            if (span.start != req.prompt_done) continue;
            if (!req.prompt_started) {
                req.prompt_started = true;
                req.t_prompt_start = clock_type::now();
            }
            try {
                std::vector<float> embd = projector_->encode(span);
                if (mrope_) {
                    // Positions on the image's grid, laid out by mtmd: the image takes n_pos of them.
                    const int rc = projector_->decode(span, embd, ctx_, pos_at(slot, slot.cache.size()), slot.seq,
                                                      n_batch_);
                    if (rc != 0) throw Error(ErrorKind::Inference, "decoding an image failed with code " + std::to_string(rc));
                    const size_t saved = slot.squeezed.empty() ? 0 : slot.squeezed.back().second;
                    slot.squeezed.emplace_back(slot.cache.size() + span.n_tokens, saved + span.n_tokens - span.n_pos);
                } else {
                    decode_image(slot, span, embd);
                }
            } catch (const Error & e) {
                forget(slot, slot.cache.size());
                finish(slot, "error", e.what(), out);
                break;
            }
            slot.cache.insert(slot.cache.end(), req.params.prompt.begin() + long(span.start),
                              req.params.prompt.begin() + long(span.start + span.n_tokens));
            req.prompt_done += span.n_tokens;
            req.timings.prompt_eval_count += int64_t(span.n_tokens);
            steps_++;
        }
    }
}

int Engine::build_batch(int budget) {
    batch_.n_tokens = 0;
    in_batch_.clear();
    auto add = [&](llama_token tok, llama_pos pos, int seq, bool logits) {
        const int i = batch_.n_tokens++;
        batch_.token[i] = tok;
        batch_.pos[i] = pos;
        batch_.n_seq_id[i] = 1;
        batch_.seq_id[i][0] = seq;
        batch_.logits[i] = logits;
    };
    // Generating slots first: one token each keeps every stream moving.
    for (Slot & slot : slots_) {
        if (!slot.req || !slot.req->generating || budget - batch_.n_tokens < 1) continue;
        slot.batch_from = batch_.n_tokens;
        slot.batch_count = 1;
        add(slot.req->next_token, pos_at(slot, slot.cache.size()), slot.seq, true);
        in_batch_.push_back(&slot);
    }
    // Then prompt chunks, oldest request first, in what room is left.
    std::vector<Slot *> prefilling;
    for (Slot & slot : slots_) {
        if (slot.req && !slot.req->generating) prefilling.push_back(&slot);
    }
    std::sort(prefilling.begin(), prefilling.end(), [](Slot * a, Slot * b) { return a->req->id < b->req->id; });
    for (Slot * slot : prefilling) {
        Request & req = *slot->req;
        const auto & prompt = req.params.prompt;
        const int room = budget - batch_.n_tokens;
        const int left = int(prompt.size() - req.prompt_done);
        if (room <= 0) break;
        if (req.embedding && left > room) {
            if (batch_.n_tokens > 0) break;  // an input is never split: it waits for an empty batch
        }
        int take = std::min(room, left);
        for (const auto & span : req.params.media) {
            if (span.start >= req.prompt_done) {
                take = std::min<int>(take, int(span.start - req.prompt_done));
                break;
            }
        }
        if (take <= 0) continue;  // an image comes first; prefill_media takes it
        if (!req.prompt_started) {
            req.prompt_started = true;
            req.t_prompt_start = clock_type::now();
        }
        slot->batch_from = batch_.n_tokens;
        slot->batch_count = take;
        for (int k = 0; k < take; ++k) {
            const size_t at = req.prompt_done + size_t(k);
            const bool last = at + 1 == prompt.size();
            add(prompt[at], pos_at(*slot, at), slot->seq, req.embedding || last);  // the cache mirrors the prompt
        }
        in_batch_.push_back(slot);
    }
    return batch_.n_tokens;
}

void Engine::after_decode() {
    std::vector<Event> out;
    bool urgent = false;  // a first token or a finished request: wake the consumer now
    for (Slot * slot : in_batch_) {
        Request & req = *slot->req;
        if (req.generating) {
            slot->cache.push_back(req.next_token);
            to_sample_.push_back(slot);
            continue;
        }
        // A prompt chunk went in.
        const auto & prompt = req.params.prompt;
        slot->cache.insert(slot->cache.end(), prompt.begin() + long(req.prompt_done),
                           prompt.begin() + long(req.prompt_done) + slot->batch_count);
        req.prompt_done += size_t(slot->batch_count);
        req.timings.prompt_eval_count += slot->batch_count;
        if (req.prompt_done < prompt.size()) continue;

        req.t_prompt_end = clock_type::now();
        req.timings.prompt_eval_duration = ns_between(req.t_prompt_start, req.t_prompt_end);
        if (req.embedding) {
            const float * emb = llama_get_embeddings_seq(ctx_, slot->seq);
            if (!emb) emb = llama_get_embeddings_ith(ctx_, slot->batch_from + slot->batch_count - 1);
            Event & e = event_for(out, req.id);
            if (!emb) {
                finish(*slot, "error", "the model returned no embedding", out);
                continue;
            }
            // Rank pooling gives a reranker's scores (n_cls_out of them), not an embedding.
            const int n_embd = llama_pooling_type(ctx_) == LLAMA_POOLING_TYPE_RANK
                                   ? std::max(1, model_->n_cls_out())
                                   : llama_model_n_embd_out(model_->get());
            e.embedding.assign(emb, emb + n_embd);
            if (req.normalize) l2_normalize(e.embedding);
            finish(*slot, "stop", "", out);
            continue;
        }
        // Penalties look back over the prompt too, as llama.cpp's own tools do.
        const size_t from = prompt.size() > 256 ? prompt.size() - 256 : 0;
        for (size_t i = from; i < prompt.size(); ++i) {
            if (!is_media_placeholder(prompt[i])) req.sampler->accept_prompt_token(prompt[i]);
        }
        req.generating = true;
        to_sample_.push_back(slot);
        urgent = true;
    }
    in_batch_.clear();
    // Every slot's token is picked side by side (its sampler is its own), then taken in order.
    // A slot whose chain ran in the graph has its token already, and its logits never came back.
    for (Slot * slot : to_sample_) {
        const int i = slot->batch_from + slot->batch_count - 1;
        slot->logits = nullptr;
        slot->picked = LLAMA_TOKEN_NULL;
        if (slot->backend) {
            slot->picked = llama_get_sampled_token_ith(ctx_, i);
            device_picks_++;
            if (slot->picked == LLAMA_TOKEN_NULL) slot->picked = finish_backend_pick(ctx_, i, slot->backend);
            if (slot->picked != LLAMA_TOKEN_NULL) llama_sampler_accept(slot->backend, slot->picked);
        } else {
            slot->logits = llama_get_logits_ith(ctx_, i);
            host_picks_.push_back(slot);
        }
    }
    pickers_->run(int(host_picks_.size()), [this](int i) { pick(*host_picks_[size_t(i)]); });
    host_picks_.clear();
    for (Slot * slot : to_sample_) {
        if (slot->picked == LLAMA_TOKEN_NULL) {
            finish(*slot, "error", "the device's sampler picked no token", out);
        } else {
            take_pick(*slot, out);
        }
    }
    to_sample_.clear();
    for (const Event & e : out) urgent = urgent || e.done;
    publish(out, urgent);
}

// On any of the pickers' threads: only this slot's own state is touched.
void Engine::pick(Slot & slot) {
    Request & req = *slot.req;
    slot.picked = req.sampler->sample(slot.logits);
    if (req.params.logprobs && !model_->is_eog(slot.picked)) {
        slot.picked_logprob = TokenLogprob{slot.picked, 0.0f, {}};
        Sampler::logprobs(slot.logits, model_->n_vocab(), slot.picked, req.params.top_logprobs,
                          slot.picked_logprob.logprob, slot.picked_logprob.top);
    }
}

void Engine::take_pick(Slot & slot, std::vector<Event> & out) {
    Request & req = *slot.req;
    const llama_token token = slot.picked;

    if (model_->is_eog(token)) {
        finish(slot, "stop", "", out);
        return;
    }
    Event & e = event_for(out, req.id);
    req.n_generated++;
    e.tokens.push_back(token);
    if (req.params.logprobs) e.logprobs.push_back(std::move(slot.picked_logprob));
    const bool hit_stop = req.text->push(model_->token_to_piece(token, false));
    e.text += req.text->take_ready();
    if (hit_stop) {
        finish(slot, "stop", "", out);
    } else if (req.params.num_predict >= 0 && req.n_generated >= req.params.num_predict) {
        finish(slot, "length", "", out);
    } else if (slot.cache.size() + 1 >= size_t(params_.n_ctx) && !(req.params.shift && shift_context(slot))) {
        finish(slot, "length", "", out);
    } else {
        req.next_token = token;
    }
}

void Engine::finish(Slot & slot, const std::string & reason, const std::string & error, std::vector<Event> & out) {
    Request & req = *slot.req;
    Event & e = event_for(out, req.id);
    if (req.text) {
        e.text += req.text->finish();
        if (req.text->stopped()) e.stop_sequence = req.text->matched_stop();
    }
    const auto now = clock_type::now();
    if (req.generating) {
        req.timings.eval_count = req.n_generated;
        req.timings.eval_duration = ns_between(req.t_prompt_end, now);
    } else if (req.timings.prompt_eval_count > 0 && req.timings.prompt_eval_duration == 0) {
        req.timings.prompt_eval_duration = ns_between(req.t_prompt_start, now);
    }
    e.timings = req.timings;
    e.done = true;
    e.done_reason = reason;
    e.error = error;
    if (req.embedding) forget(slot, 0);
    {
        std::lock_guard<std::mutex> lk(queue_mutex_);
        live_.erase(req.id);
    }
    slot.req.reset();
    busy_--;
}

void Engine::fail_batch(const std::string & error, std::vector<Event> & out) {
    for (Slot * s : in_batch_) {
        forget(*s, 0);
        finish(*s, "error", error, out);
    }
    in_batch_.clear();
}

// Makes room in a full slot: keeps the first num_keep tokens, drops half of the rest and moves
// the remainder down, so generation goes on with the most recent context.
bool Engine::shift_context(Slot & slot) {
    if (!mem_ || !llama_memory_can_shift(mem_) || model_->n_swa() > 0 || !slot.req->params.media.empty()) return false;
    const int n_past = int(slot.cache.size());
    const int n_keep = std::clamp(slot.req->params.num_keep, 0, n_past - 2);
    const int n_discard = (n_past - n_keep) / 2;
    if (n_discard <= 0) return false;
    // Cells shared with another sequence have one position for both: moving them would move the
    // other sequence's too. Such a slot ends with "length" instead.
    if (slot.shared > size_t(n_keep)) return false;
    if (!llama_memory_seq_rm(mem_, slot.seq, n_keep, n_keep + n_discard)) return false;
    llama_memory_seq_add(mem_, slot.seq, n_keep + n_discard, n_past, -n_discard);
    slot.cache.erase(slot.cache.begin() + n_keep, slot.cache.begin() + n_keep + n_discard);
    return true;
}

// Drops the slot's KV cells from position `from` on.
void Engine::forget(Slot & slot, size_t from) {
    if (mem_) llama_memory_seq_rm(mem_, slot.seq, from == 0 ? -1 : pos_at(slot, from), -1);
    slot.cache.resize(std::min(slot.cache.size(), from));
    trim_squeezed(slot);
    slot.shared = std::min(slot.shared, slot.cache.size());
}

Event & Engine::event_for(std::vector<Event> & out, uint64_t id) {
    for (auto & e : out) {
        if (e.id == id) return e;
    }
    out.emplace_back();
    out.back().id = id;
    return out.back();
}

// Hands a step's output to the consumer, merging it into what the consumer has not drained yet.
void Engine::publish(std::vector<Event> & events, bool urgent) {
    note_slots();  // before the consumer can learn of a finished request, its slot shows free
    if (events.empty()) {
        mailbox_.nudge();  // still owed from an earlier step?
        return;
    }
    mailbox_.post(events, urgent);
}

std::vector<Event> Engine::drain(int timeout_ms) { return mailbox_.drain(timeout_ms); }

}  // namespace a3s
