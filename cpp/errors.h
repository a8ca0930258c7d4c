// Errors that cross into Python. The binding maps each kind onto a class in a3s_power.errors,
// so callers catch the package's own exceptions, never a bare RuntimeError.
#pragma once

#include <stdexcept>
#include <string>

namespace a3s {

enum class ErrorKind { ModelLoad, InvalidOption, Inference };

class Error : public std::runtime_error {
  public:
    Error(ErrorKind kind, const std::string & message) : std::runtime_error(message), kind_(kind) {}
    ErrorKind kind() const { return kind_; }

  private:
    ErrorKind kind_;
};

[[noreturn]] inline void throw_invalid_option(const std::string & option, const std::string & reason) {
    throw Error(ErrorKind::InvalidOption, "invalid option " + option + ": " + reason);
}

}  // namespace a3s
