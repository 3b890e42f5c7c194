#pragma once
// Reading a tensor whose size a reader relies on (global and input scales, weight_shape, block
// scales, zero points): dtype, shape and element count are checked before a byte is read, so a
// malformed companion (a weight_scale_2 of zero elements, an I32 weight_shape) is an error
// naming the file and tensor, never a read past a buffer. Used by validate, the dequantize
// transform's planners, splice and the runner.

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"

namespace qs {

// Throws BadInput `kind` naming the tensor's file and name when its dtype is not one of
// `dtypes`. `what` says what the reader needs ("NVFP4 global scale").
void expect_dtype(const TensorLocation& location, std::initializer_list<DType> dtypes,
                  const std::string& what, const std::string& kind);

// Throws BadInput `kind` when the tensor's shape is not `shape`.
void expect_shape(const TensorLocation& location, const Shape& shape, const std::string& what,
                  const std::string& kind);

// A scalar F32 stored as [] or [1] (NVFP4 weight_scale_2 / weight_global_scale, input scales).
bool is_scalar_shape(const Shape& shape);
float read_scalar_f32(const TensorLocation& location, const std::string& what,
                      const std::string& kind);

// compressed-tensors weight_shape: I64 [2] = [rows, cols], both positive.
std::array<std::uint64_t, 2> read_weight_shape(const TensorLocation& location,
                                               const std::string& kind);

}  // namespace qs
