#include "qs/run/weight_loader.h"

#include <fmt/format.h>

#include <cstring>

#include "qs/ckpt/codecs.h"
#include "qs/ckpt/error.h"
#include "qs/quant/fp4_quantizer.h"

namespace qs::run {
namespace {

float read_scalar(const TensorLocation& location) {
  float value = 0.0f;
  std::memcpy(&value, location.shard->read(*location.info).data(), sizeof(float));
  return value;
}

std::vector<float> decode(const TensorLocation& location) {
  std::vector<float> values(location.info->element_count());
  decode_to_f32(location.info->dtype, location.shard->read(*location.info), values);
  return values;
}

}  // namespace

Matrix WeightLoader::linear(const std::string& module) const {
  const auto weight = checkpoint_.find(module + ".weight");
  const auto packed = checkpoint_.find(module + ".weight_packed");
  const auto scale_2 = checkpoint_.find(module + ".weight_scale_2");
  const auto global = checkpoint_.find(module + ".weight_global_scale");
  const auto scales = checkpoint_.find(module + ".weight_scale");
  // NVFP4 in either layout: codes, E4M3 block scales and a global scale.
  const auto codes = scale_2 ? weight : packed;
  const auto global_scale = scale_2 ? scale_2 : global;
  if (codes && global_scale && scales && codes->info->dtype == DType::U8 &&
      scales->info->dtype == DType::F8_E4M3) {
    Matrix matrix{module, device_, codes->info->shape[0], codes->info->shape[1] * 2, {}};
    matrix.values.resize(matrix.rows * matrix.cols);
    const float stored = read_scalar(*global_scale);
    const float s2 = scale_2 ? stored : 1.0f / stored;
    const auto code_bytes = codes->shard->read(*codes->info);
    const auto scale_bytes = scales->shard->read(*scales->info);
    fp4::dequantize({reinterpret_cast<const std::uint8_t*>(code_bytes.data()), code_bytes.size()},
                    {reinterpret_cast<const std::uint8_t*>(scale_bytes.data()), scale_bytes.size()},
                    s2, matrix.rows, matrix.cols, matrix.values);
    return matrix;
  }
  if (weight && weight->info->shape.size() == 2 &&
      (weight->info->dtype == DType::BF16 || weight->info->dtype == DType::F16 ||
       weight->info->dtype == DType::F32))
    return {module, device_, weight->info->shape[0], weight->info->shape[1], decode(*weight)};
  throw_bad_input("run.missing_tensor",
                  fmt::format("no float or NVFP4 weight stored for Linear {}", module),
                  checkpoint_.directory().string(), module + ".weight");
}

std::vector<float> WeightLoader::vector(const std::string& name) const {
  const auto location = checkpoint_.find(name);
  if (!location)
    throw_bad_input("run.missing_tensor", "the checkpoint lacks this tensor",
                    checkpoint_.directory().string(), name);
  return decode(*location);
}

}  // namespace qs::run
