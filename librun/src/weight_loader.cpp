#include "qs/run/weight_loader.h"

#include <fmt/format.h>

#include <cstring>
#include <optional>

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

std::vector<std::uint32_t> read_words(const TensorLocation& location) {
  const auto bytes = location.shard->read(*location.info);
  std::vector<std::uint32_t> words(bytes.size() / 4);
  std::memcpy(words.data(), bytes.data(), words.size() * 4);
  return words;
}

// compressed-tensors pack-quantized (formats-compressed-tensors.md §4.2): b-bit codes stored
// offset by 2^(b-1), element i of a row in bits [i·b, i·b+b) of the row's int32 words; group
// scales [N, K/G]; asymmetric zero points packed the same way along the output dimension.
// w = (q − zp) · s.
Matrix dequantize_pack_quantized(const std::string& module, GemmDevice device,
                                 const TensorLocation& packed, const TensorLocation& scales,
                                 const TensorLocation& shape,
                                 const std::optional<TensorLocation>& zero_points) {
  const auto bad = [&](const std::string& why) -> Matrix {
    throw_bad_input("run.bad_pack_quantized", why, packed.shard->path().string(),
                    packed.info->name);
  };
  if (packed.info->dtype != DType::I32 || packed.info->shape.size() != 2 ||
      shape.info->element_count() != 2)
    return bad("weight_packed must be I32 [N, K·b/32] with a weight_shape of [N, K]");
  std::int64_t dims[2];
  std::memcpy(dims, shape.shard->read(*shape.info).data(), sizeof(dims));
  const auto rows = static_cast<std::uint64_t>(dims[0]), cols = static_cast<std::uint64_t>(dims[1]);
  const std::uint64_t words_per_row = packed.info->shape[1];
  if (rows != packed.info->shape[0] || cols == 0 || (words_per_row * 32) % cols != 0)
    return bad("weight_shape does not match weight_packed");
  const std::uint64_t bits = words_per_row * 32 / cols;
  if (bits != 2 && bits != 4 && bits != 8) return bad("only 2, 4 and 8-bit packing is supported");
  const auto scale = decode(scales);
  const std::uint64_t groups = scales.info->shape.size() == 2 ? scales.info->shape[1] : 0;
  if (scales.info->shape.size() != 2 || scales.info->shape[0] != rows || groups == 0 ||
      cols % groups != 0)
    return bad("weight_scale must be [N, K/G]");
  const std::uint64_t group_size = cols / groups;
  const std::uint32_t mask = (1u << bits) - 1u, offset = 1u << (bits - 1);
  const auto words = read_words(packed);
  std::vector<std::uint32_t> zero_words;
  if (zero_points) zero_words = read_words(*zero_points);
  Matrix matrix{module, device, rows, cols, std::vector<float>(rows * cols)};
  for (std::uint64_t n = 0; n < rows; ++n) {
    for (std::uint64_t k = 0; k < cols; ++k) {
      const std::uint64_t bit = k * bits;
      const std::uint32_t u = (words[n * words_per_row + bit / 32] >> (bit % 32)) & mask;
      const std::uint64_t g = k / group_size;
      std::int32_t zero = 0;
      if (zero_points) {
        const std::uint64_t zbit = n * bits;
        zero = static_cast<std::int32_t>((zero_words[(zbit / 32) * groups + g] >> (zbit % 32)) &
                                         mask) -
               static_cast<std::int32_t>(offset);
      }
      const auto q = static_cast<std::int32_t>(u) - static_cast<std::int32_t>(offset);
      matrix.values[n * cols + k] = static_cast<float>(q - zero) * scale[n * groups + g];
    }
  }
  return matrix;
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
  const auto shape = checkpoint_.find(module + ".weight_shape");
  if (packed && packed->info->dtype == DType::I32 && scales && shape)
    return dequantize_pack_quantized(module, device_, *packed, *scales, *shape,
                                     checkpoint_.find(module + ".weight_zero_point"));
  if (weight && weight->info->shape.size() == 2 &&
      (weight->info->dtype == DType::BF16 || weight->info->dtype == DType::F16 ||
       weight->info->dtype == DType::F32))
    return {module, device_, weight->info->shape[0], weight->info->shape[1], decode(*weight)};
  throw_bad_input(
      "run.missing_tensor",
      fmt::format("no float, NVFP4 or pack-quantized weight stored for Linear {}", module),
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
