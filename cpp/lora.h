// A LoRA adapter loaded over one base Model. Several engines (contexts) may apply the same or
// different adapters over one base, so the weights of the base are loaded once.
#pragma once

#include <memory>
#include <string>

#include "model.h"

namespace a3s {

class LoraAdapter {
  public:
    LoraAdapter(ModelPtr base, const std::string & path);
    ~LoraAdapter();
    LoraAdapter(const LoraAdapter &) = delete;
    LoraAdapter & operator=(const LoraAdapter &) = delete;

    llama_adapter_lora * get() const { return adapter_; }
    const std::string & path() const { return path_; }
    const ModelPtr & base() const { return base_; }

  private:
    ModelPtr base_;  // the adapter lives no longer than its base model
    std::string path_;
    llama_adapter_lora * adapter_ = nullptr;
};

using LoraPtr = std::shared_ptr<LoraAdapter>;

}  // namespace a3s
