#pragma once
// The one exception type the libraries throw. Libraries never print or exit; the CLI turns a
// qs::Error into one line on stderr and an exit code.

#include <stdexcept>
#include <string>

namespace qs {

// Broad class of failure; decides the CLI exit code (bad input → 2, internal → 1).
enum class ErrorClass {
  BadInput,  // the user's files, flags or recipe are wrong
  Io,        // the operating system refused (disk full, permission, short write)
  Internal,  // a bug in quantsmith
};

class Error : public std::runtime_error {
 public:
  // `kind` is a stable machine-readable identifier such as "safetensors.header_too_large";
  // tests assert on it, so every distinct failure has its own.
  Error(ErrorClass error_class, std::string kind, std::string message, std::string file = {},
        std::string tensor = {});

  ErrorClass error_class() const { return error_class_; }
  const std::string& kind() const { return kind_; }
  const std::string& file() const { return file_; }
  const std::string& tensor() const { return tensor_; }
  // The bare message without file and tensor prefixes.
  const std::string& detail() const { return detail_; }

 private:
  ErrorClass error_class_;
  std::string kind_;
  std::string detail_;
  std::string file_;
  std::string tensor_;
};

// Shorthands for the common case of rejecting input.
[[noreturn]] void throw_bad_input(std::string kind, std::string message, std::string file = {},
                                  std::string tensor = {});
[[noreturn]] void throw_io_error(std::string kind, std::string message, std::string file = {},
                                 std::string tensor = {});

}  // namespace qs
