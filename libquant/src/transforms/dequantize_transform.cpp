#include "qs/quant/dequantize_transform.h"

#include <fmt/format.h>

#include <cstring>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/fp8_block_quantizer.h"
#include "qs/quant/int_quantizer.h"
#include "qs/quant/vq.h"

namespace qs {
namespace {

void expect_bytes(const SourceTensor& source, std::uint64_t bytes) {
  if (source.bytes.size() != bytes)
    throw Error(
        ErrorClass::BadInput, "dequantize.bad_input",
        fmt::format("{} bytes where the module's shape needs {}", source.bytes.size(), bytes), {},
        source.info->name);
}

std::span<const std::uint8_t> as_u8(std::span<const std::byte> bytes) {
  return {reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()};
}

void decode_nvfp4(const DequantizeRequest& request, std::span<const SourceTensor> sources,
                  std::span<float> values) {
  expect_bytes(sources[0], request.rows * request.cols / 2);
  expect_bytes(sources[1], request.rows * request.cols / 16);
  expect_bytes(sources[2], sizeof(float));
  float global = 0.0f;
  std::memcpy(&global, sources[2].bytes.data(), sizeof(float));
  const bool reciprocal =
      weight_format(request.layout).scale_convention == ScaleConvention::Reciprocal;
  const float s2 = reciprocal ? 1.0f / global : global;
  fp4::dequantize(as_u8(sources[0].bytes), as_u8(sources[1].bytes), s2, request.rows, request.cols,
                  values);
}

void decode_integer(const DequantizeRequest& request, std::span<const SourceTensor> sources,
                    std::span<float> values) {
  const auto shapes = intq::packed_shapes(request.rows, request.cols, request.bits);
  expect_bytes(sources[0], request.rows * shapes.words_per_row * 4);
  expect_bytes(sources[1], request.rows * request.groups * dtype_bits(sources[1].info->dtype) / 8);
  const bool zero_points = sources.size() > 3;
  if (zero_points) expect_bytes(sources[3], shapes.zero_point_rows * request.groups * 4);
  const auto quantized = intq::unpack(sources[0].bytes, sources[1].bytes, sources[1].info->dtype,
                                      zero_points ? sources[3].bytes : std::span<const std::byte>(),
                                      request.rows, request.cols, request.groups, request.bits);
  intq::dequantize(quantized, values);
}

// The FP8 codes in place and the scales copied out (a few KB: the source buffer promises no
// float alignment).
struct Fp8BlockSource {
  std::vector<float> scales;
  fp8::Fp8View view;
};

Fp8BlockSource fp8_block_source(const DequantizeRequest& request,
                                std::span<const SourceTensor> sources) {
  const auto scale_count = fp8::scale_rows(request.rows) * fp8::scale_cols(request.cols);
  expect_bytes(sources[0], request.rows * request.cols);
  expect_bytes(sources[1], scale_count * sizeof(float));
  Fp8BlockSource source{std::vector<float>(scale_count), {}};
  std::memcpy(source.scales.data(), sources[1].bytes.data(), sources[1].bytes.size());
  source.view = {as_u8(sources[0].bytes), source.scales, request.rows, request.cols};
  return source;
}

void decode_fp8_block(const DequantizeRequest& request, std::span<const SourceTensor> sources,
                      std::span<float> out) {
  fp8::dequantize(fp8_block_source(request, sources).view, out);
}

// Codes unpacked from each row's LSB-first stream, then codeword × scale in f32
// (docs/formats/vq.md, "Decoding"). Sources: vq_codes, vq_scales, the codebook.
void decode_vq(const DequantizeRequest& request, std::span<const SourceTensor> sources,
               std::span<float> out) {
  if (!request.vq_tier)
    throw Error(ErrorClass::Internal, "dequantize.vq_tier", "a VQ request carries its tier");
  const VqTier& tier = *request.vq_tier;
  const std::uint64_t words = tier.packed_words_per_row(request.cols);
  expect_bytes(sources[0], request.rows * words * sizeof(std::int32_t));
  expect_bytes(sources[1], request.rows * request.groups * dtype_bits(sources[1].info->dtype) / 8);
  expect_bytes(sources[2],
               std::uint64_t{tier.k} * tier.d * dtype_bits(sources[2].info->dtype) / 8);
  std::vector<std::int32_t> packed(request.rows * words);  // the source promises no alignment
  std::memcpy(packed.data(), sources[0].bytes.data(), sources[0].bytes.size());
  vq::VqQuantized quantized;
  quantized.rows = request.rows;
  quantized.cols = request.cols;
  quantized.scale_dtype = sources[1].info->dtype;
  quantized.codes.resize(request.rows * (request.cols / tier.d));
  try {
    vq::unpack_codes(packed, request.rows, request.cols, tier, quantized.codes);
  } catch (const Error& error) {  // name the tensor whose codes are out of range
    throw Error(error.error_class(), error.kind(), error.detail(), {}, sources[0].info->name);
  }
  quantized.scales.resize(request.rows * request.groups);
  decode_to_f32(sources[1].info->dtype, sources[1].bytes, quantized.scales);
  vq::Codebook codebook;
  codebook.tier = tier;
  codebook.dtype = sources[2].info->dtype;
  codebook.codewords.resize(std::uint64_t{tier.k} * tier.d);
  decode_to_f32(sources[2].info->dtype, sources[2].bytes, codebook.codewords);
  vq::decode(quantized, codebook, out);
}

// libquant's half of the weight-format registry (qs/ckpt/formats/weight_format.h): the decoder
// of every decodable format, one line each. Sources arrive as the format's check orders them.
struct WeightDecoder {
  WeightLayout layout;
  void (*decode)(const DequantizeRequest&, std::span<const SourceTensor>, std::span<float>);
};

constexpr WeightDecoder kDecoders[] = {
    {WeightLayout::Nvfp4Modelopt, decode_nvfp4},
    {WeightLayout::Nvfp4CompressedTensors, decode_nvfp4},
    {WeightLayout::PackQuantized, decode_integer},
    {WeightLayout::Fp8Block, decode_fp8_block},
    {WeightLayout::Vq, decode_vq},
};

class DequantizeTransform final : public Transform {
 public:
  explicit DequantizeTransform(const DequantizeRequest& request) : request_(request) {}

  std::string describe() const override {
    return fmt::format("dequantize({} → {})", weight_format(request_.layout).name,
                       dtype_name(request_.dtype));
  }

  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    if (request_.layout == WeightLayout::Fp8Block && request_.dtype == DType::BF16) {
      // One pass straight into the output: the product rounded to BF16 as encode_from_f32 does.
      fp8::dequantize_to_bf16(fp8_block_source(request_, sources).view,
                              {reinterpret_cast<std::uint16_t*>(outputs[0].data()),
                               outputs[0].size() / sizeof(std::uint16_t)});
      return {};
    }
    std::vector<float> values(request_.rows * request_.cols);
    dequantize_weight(request_, sources, values);
    encode_from_f32(request_.dtype, values, outputs[0]);
    return {};
  }

 private:
  DequantizeRequest request_;
};

}  // namespace

void dequantize_weight(const DequantizeRequest& request, std::span<const SourceTensor> sources,
                       std::span<float> out) {
  for (const auto& decoder : kDecoders)
    if (decoder.layout == request.layout) return decoder.decode(request, sources, out);
  throw Error(
      ErrorClass::Internal, "dequantize.no_decoder",
      fmt::format("no decoder for weights stored as {}", weight_format(request.layout).name));
}

std::shared_ptr<const Transform> make_dequantize_transform(const DequantizeRequest& request) {
  return std::make_shared<DequantizeTransform>(request);
}

}  // namespace qs
