#pragma once
// The descriptors the registry table (weight_format.cpp) lists, one function per format, each
// defined in the format's own file, and the small predicates they share.

#include "qs/ckpt/formats/weight_format.h"

namespace qs::formats {

const WeightFormat& dense_format();
const WeightFormat& nvfp4_modelopt_format();
const WeightFormat& nvfp4_compressed_tensors_format();
const WeightFormat& pack_quantized_format();
const WeightFormat& int8_format();
const WeightFormat& fp8_format();
const WeightFormat& fp8_block_format();
const WeightFormat& vq_format();

inline bool has(const ModuleParameters& parameters, const std::string& name) {
  return parameters.count(name) != 0;
}

inline bool has(const ModuleParameters& parameters, const std::string& name, DType dtype) {
  const auto found = parameters.find(name);
  return found != parameters.end() && found->second.info->dtype == dtype;
}

inline bool is_float_dtype(DType dtype) {
  return dtype == DType::BF16 || dtype == DType::F16 || dtype == DType::F32 || dtype == DType::F64;
}

// The parameter's header when it is stored with two dimensions, else nullptr.
inline const TensorInfo* two_dimensional(const ModuleParameters& parameters,
                                         const std::string& name) {
  const auto found = parameters.find(name);
  return found != parameters.end() && found->second.info->shape.size() == 2 ? found->second.info
                                                                            : nullptr;
}

// The weight's own [out, in] (formats that store one code per weight element).
std::optional<Shape> stored_weight_shape(const ModuleParameters& parameters);

// A companion every module of the format stores; throws BadInput `kind` naming the module's
// tensor, and the file holding its other tensors, when it is missing.
const TensorLocation& required_parameter(const std::string& module,
                                         const ModuleParameters& parameters,
                                         const std::string& name, const std::string& kind);

// Throws BadInput `kind` naming the tensor's file and name.
[[noreturn]] void fail_tensor(const TensorLocation& location, const std::string& kind,
                              const std::string& message);

}  // namespace qs::formats
