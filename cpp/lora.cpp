#include "lora.h"

#include <sys/stat.h>

#include "errors.h"
#include "log.h"

namespace a3s {

LoraAdapter::LoraAdapter(ModelPtr base, const std::string & path) : base_(std::move(base)), path_(path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        throw Error(ErrorKind::ModelLoad, "failed to load adapter " + path + ": no such file");
    }
    take_thread_log_errors();
    adapter_ = llama_adapter_lora_init(base_->get(), path.c_str());
    if (!adapter_) {
        const std::string why = take_thread_log_errors();
        throw Error(ErrorKind::ModelLoad, "failed to load adapter " + path + " over " + base_->path() + ": " +
                                              (why.empty() ? "it does not match the base model" : why));
    }
}

LoraAdapter::~LoraAdapter() {
    // A closed base model has freed its adapters already.
    if (adapter_ && !base_->closed()) llama_adapter_lora_free(adapter_);
}

}  // namespace a3s
