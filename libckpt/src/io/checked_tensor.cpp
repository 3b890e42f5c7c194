#include "qs/ckpt/io/checked_tensor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>

#include "qs/ckpt/core/error.h"

namespace qs {
namespace {

[[noreturn]] void fail(const TensorLocation& location, const std::string& kind,
                       const std::string& message) {
  throw_bad_input(kind, message, location.shard->path().string(), location.info->name);
}

}  // namespace

void expect_dtype(const TensorLocation& location, std::initializer_list<DType> dtypes,
                  const std::string& what, const std::string& kind) {
  if (std::find(dtypes.begin(), dtypes.end(), location.info->dtype) != dtypes.end()) return;
  std::vector<std::string> names;
  for (DType dtype : dtypes) names.emplace_back(dtype_name(dtype));
  fail(location, kind,
       fmt::format("stored as {}, but a {} is {}", dtype_name(location.info->dtype), what,
                   fmt::join(names, " or ")));
}

void expect_shape(const TensorLocation& location, const Shape& shape, const std::string& what,
                  const std::string& kind) {
  if (location.info->shape == shape) return;
  fail(location, kind,
       fmt::format("shape {}, but the {} must be {}", shape_to_string(location.info->shape), what,
                   shape_to_string(shape)));
}

bool is_scalar_shape(const Shape& shape) {
  return shape.empty() || (shape.size() == 1 && shape[0] == 1);
}

float read_scalar_f32(const TensorLocation& location, const std::string& what,
                      const std::string& kind) {
  expect_dtype(location, {DType::F32}, what, kind);
  if (!is_scalar_shape(location.info->shape))
    fail(location, kind,
         fmt::format("shape {}, but a {} is one F32 value ([] or [1])",
                     shape_to_string(location.info->shape), what));
  const auto bytes = location.shard->read(*location.info);
  if (bytes.size() != sizeof(float))
    fail(location, kind, fmt::format("{} bytes where one F32 value needs 4", bytes.size()));
  float value = 0.0f;
  std::memcpy(&value, bytes.data(), sizeof(float));
  return value;
}

std::array<std::uint64_t, 2> read_weight_shape(const TensorLocation& location,
                                               const std::string& kind) {
  const std::string what = "weight_shape";
  expect_dtype(location, {DType::I64}, what, kind);
  expect_shape(location, Shape{2}, what + " ([rows, cols])", kind);
  const auto bytes = location.shard->read(*location.info);
  if (bytes.size() != 16)
    fail(location, kind, fmt::format("{} bytes where two I64 values need 16", bytes.size()));
  std::int64_t dims[2];
  std::memcpy(dims, bytes.data(), sizeof(dims));
  if (dims[0] <= 0 || dims[1] <= 0)
    fail(location, kind,
         fmt::format("[{}, {}]: a weight has at least one row and one column", dims[0], dims[1]));
  return {static_cast<std::uint64_t>(dims[0]), static_cast<std::uint64_t>(dims[1])};
}

}  // namespace qs
