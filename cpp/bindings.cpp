// The Python surface of _core. Everything that may block (loading, decoding, waiting for output)
// runs with the GIL released.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <poll.h>
#include <random>
#include <thread>

#include "engine.h"
#include "errors.h"
#include "log.h"
#include "lora.h"
#include "notifier.h"
#include "quantize.h"
#include "vision.h"
#include "model.h"

namespace py = pybind11;
using namespace a3s;

namespace {

py::dict timings_dict(const Timings & t) {
    py::dict d;
    d["prompt_tokens"] = t.prompt_tokens;
    d["cached_tokens"] = t.cached_tokens;
    d["prompt_eval_count"] = t.prompt_eval_count;
    d["prompt_eval_duration"] = t.prompt_eval_duration;
    d["eval_count"] = t.eval_count;
    d["eval_duration"] = t.eval_duration;
    return d;
}

// A parameter struct from keywords: the struct's own defaults, then each keyword set through the
// attribute of that name, so that the defaults are written in the C++ struct alone.
template <typename T>
T from_keywords(const py::kwargs & keywords) {
    py::object self = py::cast(T{});
    for (const auto & [key, value] : keywords) {
        const std::string name = py::str(key);
        if (name.empty() || name[0] == '_' || !py::hasattr(py::type::of(self), key)) {
            throw py::type_error(std::string(py::str(py::type::of(self).attr("__name__"))) + "() got an unexpected keyword '" +
                                 name + "'");
        }
        try {
            py::setattr(self, key, value);
        } catch (py::error_already_set & e) {
            if (!e.matches(PyExc_TypeError)) throw;
            throw py::type_error(std::string(py::str(py::type::of(self).attr("__name__"))) + "(): " + name +
                                 " cannot be " + std::string(py::repr(value)));
        }
    }
    return self.cast<T>();
}

// "Name(field=value, ...)" over the struct's bound fields.
std::string fields_repr(const py::object & self) {
    const py::object type = py::type::of(self);
    const py::object property = py::module_::import("builtins").attr("property");
    std::string out = std::string(py::str(type.attr("__name__"))) + "(";
    bool first = true;
    for (const auto & name : py::module_::import("builtins").attr("dir")(type)) {
        const std::string n = py::str(name);
        if (n.empty() || n[0] == '_' || !py::isinstance(type.attr(name), property)) continue;
        out += (first ? "" : ", ") + n + "=" + std::string(py::repr(self.attr(name)));
        first = false;
    }
    return out + ")";
}

// Self-test of Notifier for tests/test_notifier.py, not an API: races a producer's "publish, then
// signal()" against a consumer's "clear(), then take what is published", as Engine::publish and
// Engine::drain do, `iterations` times. Before each race, with both sides quiet, one more item is
// published and signalled, as the engine does for a consumer asleep in poll() on the fd: if the fd
// is then not readable, that consumer would never wake, and a lost wakeup is counted. Also counted:
// an item left untaken after a race with the fd not readable. Returns the lost wakeups (0 when
// the notifier is right). The only help given to the tiny race window is many iterations and a
// random spin on each side, here, never in the notifier.
size_t notifier_stress(size_t iterations) {
    Notifier n;
    std::atomic<uint64_t> published{0};
    uint64_t taken = 0;
    std::atomic<size_t> go{0}, done{0};
    size_t lost = 0;
    auto readable = [&] {
        pollfd p{n.fd(), POLLIN, 0};
        return ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
    };
    auto wait_for = [](const std::atomic<size_t> & v, size_t want) {
        for (unsigned spins = 0; v.load() != want; ++spins) {
            if (spins > 1000) std::this_thread::yield();  // two cores, shared: let the other side run
        }
    };
    auto spin = [](unsigned k) {
        for (volatile unsigned i = 0; i < k; i = i + 1) {
        }
    };
    std::thread producer([&] {
        std::minstd_rand rng(12345);
        for (size_t i = 1; i <= iterations; ++i) {
            wait_for(go, i);
            spin(rng() % 96);
            published.fetch_add(1);  // publish ...
            n.signal();              // ... then signal, as Engine::publish does
            done.store(i);
        }
    });
    std::minstd_rand rng(54321);
    for (size_t i = 1; i <= iterations; ++i) {
        // Quiet: the consumer sleeps in poll(); output arrives and is signalled.
        published.fetch_add(1);
        n.signal();
        if (!readable()) ++lost;  // the consumer would sleep forever with output pending
        // The consumer wakes and drains while the producer publishes again.
        go.store(i);
        spin(rng() % 64);
        n.clear();
        taken = published.load();
        wait_for(done, i);
        if (taken < published.load()) {  // published after the take: the fd must say so
            if (!readable()) ++lost;
            n.clear();
            taken = published.load();
        }
    }
    producer.join();
    return lost;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "A3S Power's inference core: llama.cpp models, slots and the batch loop.";

    py::object errors = py::module_::import("a3s_power.errors");
    static py::object model_load_error = errors.attr("ModelLoadError");
    static py::object invalid_option_error = errors.attr("InvalidOptionError");
    static py::object inference_error = errors.attr("InferenceError");
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const Error & e) {
            const py::object & cls = e.kind() == ErrorKind::ModelLoad       ? model_load_error
                                     : e.kind() == ErrorKind::InvalidOption ? invalid_option_error
                                                                            : inference_error;
            PyErr_SetString(cls.ptr(), e.what());
        }
    });

    m.def("backend_init", &backend_init);
    m.def("set_log_level", &set_log_level, py::arg("level"),
          "0 = errors only, 1 = warnings, 2 = info, 3 = debug (llama.cpp's log, on stderr).");
    m.def("_notifier_stress", &notifier_stress, py::arg("iterations"), py::call_guard<py::gil_scoped_release>(),
          "Self-test, not an API: races Notifier.signal() against clear() `iterations` times and "
          "returns how many wakeups were lost (0 when the notifier is right).");
    m.def("system_info", [] { return std::string(llama_print_system_info()); });
    m.def("llama_version", [] { return std::string(llama_version()); });
    m.def("supports_gpu_offload", [] { return llama_supports_gpu_offload(); });
    m.def("supports_mmap", [] { return llama_supports_mmap(); });
    m.def("supports_mlock", [] { return llama_supports_mlock(); });
    m.def("max_devices", [] { return llama_max_devices(); });
    m.def("quantize", &quantize, py::arg("src"), py::arg("dst"), py::arg("type"), py::arg("n_threads") = 0,
          py::call_guard<py::gil_scoped_release>(),
          "Quantizes a GGUF file to another type (q4_K_M, q8_0, ...) through llama.cpp.");

    py::class_<ModelParams>(m, "ModelParams")
        .def(py::init<>())
        .def_readwrite("n_gpu_layers", &ModelParams::n_gpu_layers)
        .def_readwrite("main_gpu", &ModelParams::main_gpu)
        .def_readwrite("use_mmap", &ModelParams::use_mmap)
        .def_readwrite("use_mlock", &ModelParams::use_mlock)
        .def_readwrite("vocab_only", &ModelParams::vocab_only)
        .def_readwrite("split_mode", &ModelParams::split_mode)
        .def_readwrite("tensor_split", &ModelParams::tensor_split);

    py::class_<Model, ModelPtr>(m, "Model")
        .def(py::init<const std::string &, const ModelParams &>(), py::arg("path"), py::arg("params") = ModelParams(),
             py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("path", &Model::path)
        .def_property_readonly("closed", &Model::closed)
        .def("close", &Model::close)
        .def("metadata", &Model::metadata)
        .def("meta", &Model::meta, py::arg("key"))
        .def("chat_template", &Model::chat_template, py::arg("name") = "")
        .def_property_readonly("architecture", &Model::architecture)
        .def_property_readonly("description", &Model::description)
        .def_property_readonly("n_ctx_train", &Model::n_ctx_train)
        .def_property_readonly("n_embd", &Model::n_embd)
        .def_property_readonly("n_layer", &Model::n_layer)
        .def_property_readonly("n_vocab", &Model::n_vocab)
        .def_property_readonly("n_params", &Model::n_params)
        .def_property_readonly("size", &Model::size)
        .def_property_readonly("has_encoder", &Model::has_encoder)
        .def_property_readonly("load_duration_ns", &Model::load_duration_ns)
        .def_property_readonly("bos_token", [](const Model & self) { return llama_vocab_bos(self.vocab()); })
        .def_property_readonly("eos_token", [](const Model & self) { return llama_vocab_eos(self.vocab()); })
        .def_property_readonly("add_bos", [](const Model & self) { return llama_vocab_get_add_bos(self.vocab()); })
        .def_property_readonly("fim_tokens",
                               [](const Model & self) {
                                   const llama_vocab * v = self.vocab();
                                   py::dict d;
                                   d["prefix"] = llama_vocab_fim_pre(v);
                                   d["suffix"] = llama_vocab_fim_suf(v);
                                   d["middle"] = llama_vocab_fim_mid(v);
                                   return d;
                               })
        .def("is_eog", &Model::is_eog, py::arg("token"))
        .def_property_readonly("n_cls_out", &Model::n_cls_out)
        .def("rerank_tokens", &Model::rerank_tokens, py::arg("query"), py::arg("document"),
             py::call_guard<py::gil_scoped_release>())
        .def("tokenize", &Model::tokenize, py::arg("text"), py::arg("add_special") = true,
             py::arg("parse_special") = true, py::call_guard<py::gil_scoped_release>())
        .def("detokenize", &Model::detokenize, py::arg("tokens"), py::arg("remove_special") = false,
             py::arg("unparse_special") = false)
        .def("token_to_piece",
             [](const Model & self, llama_token t, bool special) {
                 if (t < 0 || t >= self.n_vocab()) {
                     throw Error(ErrorKind::InvalidOption, "token id " + std::to_string(t) + " is outside the vocabulary");
                 }
                 return py::bytes(self.token_to_piece(t, special));
             },
             py::arg("token"), py::arg("special") = false);

    py::class_<ContextParams>(m, "ContextParams")
        .def(py::init<>())
        .def_readwrite("n_ctx", &ContextParams::n_ctx)
        .def_readwrite("n_batch", &ContextParams::n_batch)
        .def_readwrite("n_ubatch", &ContextParams::n_ubatch)
        .def_readwrite("n_parallel", &ContextParams::n_parallel)
        .def_readwrite("n_threads", &ContextParams::n_threads)
        .def_readwrite("n_threads_batch", &ContextParams::n_threads_batch)
        .def_readwrite("flash_attn", &ContextParams::flash_attn)
        .def_readwrite("type_k", &ContextParams::type_k)
        .def_readwrite("type_v", &ContextParams::type_v)
        .def_readwrite("embeddings", &ContextParams::embeddings)
        .def_readwrite("kv_unified", &ContextParams::kv_unified)
        .def_readwrite("stream_interval_ms", &ContextParams::stream_interval_ms)
        .def_readwrite("nice", &ContextParams::nice)
        .def_readwrite("prompt_cache_mb", &ContextParams::prompt_cache_mb)
        .def_readwrite("prompt_cache_dir", &ContextParams::prompt_cache_dir)
        .def_readwrite("prompt_cache_disk_mb", &ContextParams::prompt_cache_disk_mb)
        .def_readwrite("backend_sampling", &ContextParams::backend_sampling);

    py::class_<SamplingParams>(m, "SamplingParams")
        .def(py::init(&from_keywords<SamplingParams>), "Sampling with the core's defaults, but for the fields given.")
        .def_readwrite("temperature", &SamplingParams::temperature)
        .def_readwrite("top_k", &SamplingParams::top_k)
        .def_readwrite("top_p", &SamplingParams::top_p)
        .def_readwrite("min_p", &SamplingParams::min_p)
        .def_readwrite("typical_p", &SamplingParams::typical_p)
        .def_readwrite("repeat_last_n", &SamplingParams::repeat_last_n)
        .def_readwrite("repeat_penalty", &SamplingParams::repeat_penalty)
        .def_readwrite("presence_penalty", &SamplingParams::presence_penalty)
        .def_readwrite("frequency_penalty", &SamplingParams::frequency_penalty)
        .def_readwrite("penalize_newline", &SamplingParams::penalize_newline)
        .def_readwrite("mirostat", &SamplingParams::mirostat)
        .def_readwrite("mirostat_tau", &SamplingParams::mirostat_tau)
        .def_readwrite("mirostat_eta", &SamplingParams::mirostat_eta)
        .def_readwrite("seed", &SamplingParams::seed)
        .def_readwrite("logit_bias", &SamplingParams::logit_bias)
        .def_readwrite("grammar", &SamplingParams::grammar)
        .def_readwrite("grammar_triggers", &SamplingParams::grammar_triggers)
        .def("__repr__", &fields_repr);

    py::class_<GenerateParams>(m, "GenerateParams")
        .def(py::init(&from_keywords<GenerateParams>),
             "One generation request's parameters, with the core's defaults but for the fields given.")
        .def_readwrite("sampling", &GenerateParams::sampling)
        .def_readwrite("num_predict", &GenerateParams::num_predict)
        .def_readwrite("stop", &GenerateParams::stop)
        .def_readwrite("logprobs", &GenerateParams::logprobs)
        .def_readwrite("top_logprobs", &GenerateParams::top_logprobs)
        .def_readwrite("shift", &GenerateParams::shift)
        .def_readwrite("num_keep", &GenerateParams::num_keep)
        .def("__repr__", &fields_repr);

    py::class_<TokenChoice>(m, "TokenChoice")
        .def_readonly("token", &TokenChoice::token)
        .def_readonly("logprob", &TokenChoice::logprob);

    py::class_<TokenLogprob>(m, "TokenLogprob")
        .def_readonly("token", &TokenLogprob::token)
        .def_readonly("logprob", &TokenLogprob::logprob)
        .def_readonly("top", &TokenLogprob::top);

    py::class_<Event>(m, "Event")
        .def_readonly("id", &Event::id)
        .def_readonly("text", &Event::text)
        .def_readonly("tokens", &Event::tokens)
        .def_readonly("logprobs", &Event::logprobs)
        .def_readonly("embedding", &Event::embedding)
        .def_readonly("done", &Event::done)
        .def_readonly("done_reason", &Event::done_reason)
        .def_readonly("stop_sequence", &Event::stop_sequence)
        .def_readonly("error", &Event::error)
        .def_property_readonly("timings", [](const Event & e) { return timings_dict(e.timings); })
        .def("__repr__", [](const Event & e) {
            return "<Event id=" + std::to_string(e.id) + " tokens=" + std::to_string(e.tokens.size()) +
                   (e.done ? " done=" + e.done_reason : std::string()) + ">";
        });

    py::class_<LoraAdapter, LoraPtr>(m, "LoraAdapter")
        .def(py::init<ModelPtr, const std::string &>(), py::arg("base"), py::arg("path"),
             py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("path", &LoraAdapter::path)
        .def_property_readonly("base", &LoraAdapter::base);

    py::class_<MultimodalPrompt>(m, "MultimodalPrompt")
        .def_readonly("tokens", &MultimodalPrompt::tokens)
        .def_property_readonly("n_images", [](const MultimodalPrompt & p) { return p.media.size(); })
        .def_property_readonly("image_tokens", [](const MultimodalPrompt & p) {
            std::vector<size_t> n;
            for (const auto & s : p.media) n.push_back(s.n_tokens);
            return n;
        });

    py::class_<Projector, ProjectorPtr>(m, "Projector")
        .def(py::init<ModelPtr, const std::string &, int, bool>(), py::arg("model"), py::arg("path"),
             py::arg("n_threads") = 0, py::arg("use_gpu") = true, py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("path", &Projector::path)
        .def_property_readonly("marker", &Projector::marker)
        .def("tokenize",
             [](const Projector & self, const std::string & text, const std::vector<py::bytes> & images, bool add_special) {
                 std::vector<std::string> raw(images.begin(), images.end());
                 py::gil_scoped_release release;
                 return self.tokenize(text, raw, add_special);
             },
             py::arg("text"), py::arg("images"), py::arg("add_special") = true);

    py::class_<Engine, std::shared_ptr<Engine>>(m, "Engine")
        .def(py::init<ModelPtr, const ContextParams &, std::vector<std::pair<LoraPtr, float>>, ProjectorPtr>(),
             py::arg("model"), py::arg("params") = ContextParams(),
             py::arg("adapters") = std::vector<std::pair<LoraPtr, float>>(), py::arg("projector") = nullptr,
             py::call_guard<py::gil_scoped_release>())
        .def("submit",
             [](Engine & self, std::vector<llama_token> prompt, GenerateParams params) {
                 params.prompt = std::move(prompt);
                 py::gil_scoped_release release;
                 return self.submit(std::move(params));
             },
             py::arg("prompt"), py::arg("params") = GenerateParams())
        .def("submit_multimodal",
             [](Engine & self, const MultimodalPrompt & prompt, GenerateParams params) {
                 params.prompt = prompt.tokens;
                 params.media = prompt.media;
                 py::gil_scoped_release release;
                 return self.submit(std::move(params));
             },
             py::arg("prompt"), py::arg("params") = GenerateParams())
        .def("submit_embedding", &Engine::submit_embedding, py::arg("tokens"), py::arg("normalize") = true,
             py::call_guard<py::gil_scoped_release>())
        .def("cancel", &Engine::cancel, py::arg("id"), py::call_guard<py::gil_scoped_release>())
        .def("drain", &Engine::drain, py::arg("timeout_ms") = 0, py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("notify_fd", &Engine::notify_fd)
        .def_property_readonly("n_ctx", [](const Engine & e) { return e.params().n_ctx; })
        .def_property_readonly("n_ctx_total", &Engine::n_ctx_total)
        .def_property_readonly("n_parallel", [](const Engine & e) { return e.params().n_parallel; })
        .def_property_readonly("embeddings", [](const Engine & e) { return e.params().embeddings; })
        .def_property_readonly("model", &Engine::model)
        .def("slots",
             [](Engine & e) {
                 py::list out;
                 for (const auto & v : e.slot_views()) {
                     py::dict d;
                     d["id"] = v.id;
                     d["busy"] = v.busy;
                     d["cached_tokens"] = v.cached_tokens;
                     d["generated"] = v.generated;
                     out.append(d);
                 }
                 return out;
             })
        .def("stats",
             [](Engine & e) {
                 EngineStats s = e.stats();
                 py::dict d;
                 d["slots"] = s.slots;
                 d["slots_busy"] = s.slots_busy;
                 d["queued"] = s.queued;
                 d["steps"] = s.steps;
                 d["decode_ns"] = s.decode_ns;
                 d["sample_ns"] = s.sample_ns;
                 d["other_ns"] = s.other_ns;
                 d["device_picks"] = s.device_picks;
                 d["prompt_cache_bytes"] = s.prompt_cache_bytes;
                 d["prompt_cache_saved"] = s.prompt_cache_saved;
                 d["prompt_cache_restored"] = s.prompt_cache_restored;
                 d["prompt_cache_skipped"] = s.prompt_cache_skipped;
                 d["prompt_cache_from_disk"] = s.prompt_cache_from_disk;
                 d["prompt_cache_disk_bytes"] = s.prompt_cache_disk_bytes;
                 return d;
             })
        .def("release_prompt_cache", &Engine::release_prompt_cache, py::call_guard<py::gil_scoped_release>())
        .def("close", &Engine::close, py::call_guard<py::gil_scoped_release>());
}
