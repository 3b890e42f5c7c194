#pragma once
// The runner spells module and tensor names from the name grammar's role table
// (qs/ckpt/model/tensor_name.h), as the parser, layouts and planners do.

#include <cstdint>
#include <string>

#include "qs/ckpt/model/tensor_name.h"

namespace qs::run {

inline std::string module_of(TensorRole role, std::uint64_t layer = 0, std::uint64_t expert = 0) {
  return role_module_path(role, static_cast<std::uint32_t>(layer),
                          static_cast<std::uint32_t>(expert));
}

// The tensor holding `parameter` of the role's module (norm gains, biases).
inline std::string tensor_of(TensorRole role, std::uint64_t layer,
                             TensorParameter parameter = TensorParameter::Weight) {
  return module_of(role, layer) + "." + parameter_name(parameter);
}

}  // namespace qs::run
