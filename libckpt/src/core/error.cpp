#include "qs/ckpt/core/error.h"

#include <utility>

namespace qs {
namespace {

// "file: tensor 'name': message" — everything on one line so the CLI can print it as is.
std::string compose(const std::string& message, const std::string& file,
                    const std::string& tensor) {
  std::string text;
  if (!file.empty()) text.append(file).append(": ");
  if (!tensor.empty()) text.append("tensor '").append(tensor).append("': ");
  text.append(message);
  return text;
}

}  // namespace

Error::Error(ErrorClass error_class, std::string kind, std::string message, std::string file,
             std::string tensor)
    : std::runtime_error(compose(message, file, tensor)),
      error_class_(error_class),
      kind_(std::move(kind)),
      detail_(std::move(message)),
      file_(std::move(file)),
      tensor_(std::move(tensor)) {}

void throw_bad_input(std::string kind, std::string message, std::string file, std::string tensor) {
  throw Error(ErrorClass::BadInput, std::move(kind), std::move(message), std::move(file),
              std::move(tensor));
}

void throw_io_error(std::string kind, std::string message, std::string file, std::string tensor) {
  throw Error(ErrorClass::Io, std::move(kind), std::move(message), std::move(file),
              std::move(tensor));
}

}  // namespace qs
