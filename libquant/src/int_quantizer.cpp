#include "qs/quant/int_quantizer.h"

#include <fmt/format.h>

#include <array>
#include <cstring>
#include <utility>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/packed_int32.h"

namespace qs::intq {
namespace {

constexpr std::array<std::pair<Observer, const char*>, 2> kObserverNames = {{
    {Observer::MinMax, "minmax"},
    {Observer::Mse, "mse"},
}};

std::uint32_t read_word(std::span<const std::byte> words, std::uint64_t index) {
  std::uint32_t word = 0;
  std::memcpy(&word, words.data() + index * 4, 4);
  return word;
}

void write_word(std::span<std::byte> words, std::uint64_t index, std::uint32_t word) {
  std::memcpy(words.data() + index * 4, &word, 4);
}

// Element `index` of a stream of `bits`-bit fields packed as compressed-tensors' pack_to_int32
// does (packed_int32.h): ⌊32/b⌋ fields per word, none split across words.
std::uint32_t stream_field(std::span<const std::byte> words, std::uint64_t first_word,
                           std::uint64_t index, int bits) {
  const auto per_word = static_cast<std::uint64_t>(packed_values_per_word(bits));
  const auto shift = static_cast<std::uint32_t>(index % per_word * bits);
  return (read_word(words, first_word + index / per_word) >> shift) & ((1u << bits) - 1u);
}

void put_stream_field(std::span<std::byte> words, std::uint64_t first_word, std::uint64_t index,
                      int bits, std::uint32_t value) {
  const auto per_word = static_cast<std::uint64_t>(packed_values_per_word(bits));
  const auto shift = static_cast<std::uint32_t>(index % per_word * bits);
  const std::uint64_t word = first_word + index / per_word;
  write_word(words, word, read_word(words, word) | (value << shift));
}

}  // namespace

std::optional<Observer> parse_observer(std::string_view text) {
  for (const auto& [observer, name] : kObserverNames)
    if (text == name) return observer;
  return std::nullopt;
}

const char* observer_name(Observer observer) {
  return kObserverNames[static_cast<std::size_t>(observer)].second;
}

namespace detail {

void check_shapes(const WeightView& weight, const IntScheme& scheme) {
  if (weight.dtype != DType::BF16 && weight.dtype != DType::F16 && weight.dtype != DType::F32)
    throw_bad_input("int.dtype", fmt::format("cannot quantize {} weights", dtype_name(weight.dtype)));
  if (scheme.format.bits < 2 || scheme.format.bits > 8)
    throw_bad_input("int.bits", fmt::format("{}-bit integers are not supported (2..8)",
                                            scheme.format.bits));
  if (scheme.group_size != kChannel && scheme.group_size <= 0)
    throw_bad_input("int.group_size", fmt::format("group size {} is not positive", scheme.group_size));
  if (weight.cols == 0 || weight.cols % scheme.group_width(weight.cols) != 0)
    throw_bad_input("int.group_size", fmt::format("in-features {} are not a multiple of the group "
                                                  "size {}",
                                                  weight.cols, scheme.group_size));
  if (weight.bytes.size() != weight.rows * weight.cols * (dtype_bits(weight.dtype) / 8))
    throw Error(ErrorClass::Internal, "int.shape", "weight bytes do not match its shape");
}

}  // namespace detail

ErrorEnergy quantize(const WeightView& weight, const IntScheme& scheme, IntQuantized& out,
                     Backend backend) {
  detail::check_shapes(weight, scheme);
  out = IntQuantized(weight.rows, weight.cols, scheme.groups(weight.cols), weight.dtype);
  switch (backend) {
    case Backend::Reference:
      return detail::quantize_reference(weight, scheme, out);
    case Backend::Cpu:
      return detail::quantize_cpu(weight, scheme, out);
    case Backend::Cuda:
      return detail::quantize_cuda(weight, scheme, out);
  }
  return {};
}

void dequantize(const IntQuantized& quantized, std::span<float> out) {
  if (out.size() != quantized.rows * quantized.cols)
    throw Error(ErrorClass::Internal, "int.shape", "dequantize output does not match the matrix");
  const std::uint64_t groups = quantized.groups();
  const std::uint64_t width = quantized.cols / groups;
  for (std::uint64_t r = 0; r < quantized.rows; ++r)
    for (std::uint64_t c = 0; c < quantized.cols; ++c)
      out[r * quantized.cols + c] = dequantize_value(quantized.codes[r * quantized.cols + c],
                                                     quantized.params(r, c / width),
                                                     quantized.scale_dtype);
}

PackedShapes packed_shapes(std::uint64_t rows, std::uint64_t cols, int bits) {
  return {packed_words(cols, bits), packed_words(rows, bits)};
}

void pack(const IntQuantized& quantized, int bits, std::span<std::byte> weight_packed,
          std::span<std::byte> weight_scale, std::span<std::byte> zero_points) {
  const auto shapes = packed_shapes(quantized.rows, quantized.cols, bits);
  const std::uint64_t groups = quantized.groups();
  const std::uint32_t scale_bytes = (dtype_bits(quantized.scale_dtype) / 8);
  if (weight_packed.size() != quantized.rows * shapes.words_per_row * 4 ||
      weight_scale.size() != quantized.rows * groups * scale_bytes ||
      (!zero_points.empty() && zero_points.size() != shapes.zero_point_rows * groups * 4))
    throw Error(ErrorClass::Internal, "int.shape", "pack buffers do not match the matrix");
  const auto offset = static_cast<std::uint32_t>(1u << (bits - 1));
  std::memset(weight_packed.data(), 0, weight_packed.size());
  for (std::uint64_t r = 0; r < quantized.rows; ++r)
    for (std::uint64_t c = 0; c < quantized.cols; ++c)
      put_stream_field(weight_packed, r * shapes.words_per_row, c, bits,
                       static_cast<std::uint32_t>(quantized.codes[r * quantized.cols + c] + offset));
  encode_from_f32(quantized.scale_dtype, quantized.scales, weight_scale);
  if (zero_points.empty()) return;
  // Packed along the output dimension: column g of the [groups] zero points is one stream
  // over the rows, and its words are row w_r of a [zero_point_rows, groups] matrix.
  std::memset(zero_points.data(), 0, zero_points.size());
  std::vector<std::byte> column(shapes.zero_point_rows * 4);
  for (std::uint64_t g = 0; g < groups; ++g) {
    std::fill(column.begin(), column.end(), std::byte{0});
    for (std::uint64_t r = 0; r < quantized.rows; ++r)
      put_stream_field(column, 0, r, bits,
                       static_cast<std::uint32_t>(quantized.zeros[r * groups + g] + offset));
    for (std::uint64_t w = 0; w < shapes.zero_point_rows; ++w)
      write_word(zero_points, w * groups + g, read_word(column, w));
  }
}

IntQuantized unpack(std::span<const std::byte> weight_packed, std::span<const std::byte> weight_scale,
                    DType scale_dtype, std::span<const std::byte> zero_points, std::uint64_t rows,
                    std::uint64_t cols, std::uint64_t groups, int bits) {
  const auto shapes = packed_shapes(rows, cols, bits);
  if (groups == 0 || cols % groups != 0 || weight_packed.size() != rows * shapes.words_per_row * 4 ||
      weight_scale.size() != rows * groups * (dtype_bits(scale_dtype) / 8) ||
      (!zero_points.empty() && zero_points.size() != shapes.zero_point_rows * groups * 4))
    throw_bad_input("int.shape", fmt::format("packed tensors do not match a [{}, {}] matrix with {} "
                                             "groups of {}-bit codes",
                                             rows, cols, groups, bits));
  IntQuantized quantized(rows, cols, groups, scale_dtype);
  const auto offset = static_cast<std::int32_t>(1u << (bits - 1));
  for (std::uint64_t r = 0; r < rows; ++r)
    for (std::uint64_t c = 0; c < cols; ++c)
      quantized.codes[r * cols + c] = static_cast<std::int8_t>(
          static_cast<std::int32_t>(stream_field(weight_packed, r * shapes.words_per_row, c, bits)) -
          offset);
  decode_to_f32(scale_dtype, weight_scale, quantized.scales);
  if (!zero_points.empty()) {
    std::vector<std::byte> column(shapes.zero_point_rows * 4);
    for (std::uint64_t g = 0; g < groups; ++g) {
      for (std::uint64_t w = 0; w < shapes.zero_point_rows; ++w)
        write_word(column, w, read_word(zero_points, w * groups + g));
      for (std::uint64_t r = 0; r < rows; ++r)
        quantized.zeros[r * groups + g] = static_cast<std::int8_t>(
            static_cast<std::int32_t>(stream_field(column, 0, r, bits)) - offset);
    }
  }
  return quantized;
}

}  // namespace qs::intq
