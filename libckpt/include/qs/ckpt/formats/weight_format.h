#pragma once
// The weight-format registry: one descriptor per way a Linear's weight can be stored (plain
// float, NVFP4 in modelopt's and compressed-tensors' layouts, compressed-tensors
// pack-quantized INTn, ...), in the style of ggml's type_traits table. A descriptor holds every
// fact about its format that more than one part of quantsmith needs: the parameter names and
// their order, how to recognise the format from a module's tensors, the logical [out, in]
// shape, the tensors a writer lays out for it, the config convention that declares it, and the
// structural checks (dtypes, shapes and element counts against each other) a reader runs before
// touching the bytes. Detection, inspect, validate, the planners, splice, mtp extract and the
// runner ask the registry; none of them names a format's tensors itself.
//
// Decoding to f32 is numerics, which libckpt does not do: libquant's dequantize_weight keeps a
// table of decoders keyed by WeightLayout (libquant/src/transforms/dequantize_transform.cpp).
//
// Adding a format: a WeightLayout value below, its descriptor (a file in libckpt/src/formats/
// declaring `const WeightFormat& NAME_format()` in weight_format_descriptors.h), one line in
// the registry table (weight_format.cpp), its kernels and decoder line in libquant, and, when
// quantsmith writes it, its scheme in the recipe vocabulary (weight_scheme.h, plan/recipe.cpp).

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "qs/ckpt/formats/weight_scheme.h"
#include "qs/ckpt/io/checkpoint.h"

namespace qs {

// A stored weight format's id. The user-visible names (inspect labels, messages) are the
// descriptors' `name`s.
enum class WeightLayout : std::uint8_t {
  Dense,                   // plain .weight in a float dtype
  Nvfp4Modelopt,           // U8 weight + F8_E4M3 weight_scale + F32 weight_scale_2
  Nvfp4CompressedTensors,  // U8 weight_packed + weight_scale + weight_global_scale
  PackQuantized,           // I32 weight_packed + weight_scale (+ weight_zero_point) + weight_shape
  Int8,                    // I8 weight + weight_scale (int-quantized / naive)
  Fp8,                     // F8_E4M3 weight + weight_scale (compressed-tensors float-quantized)
  Fp8Block,                // F8_E4M3 weight + F32 weight_scale_inv per 128×128 block (DeepSeek)
  Vq,                      // I32 vq_codes + vq_scales, codes into a shared codebook tensor
  Unrecognized,            // quantization companions in a combination we do not know
};

// The tensors of one module, keyed by parameter name ("weight", "weight_scale", ...).
using ModuleParameters = std::map<std::string, TensorLocation>;

// What the codes are, whatever tensors hold them: formats of one family share numerics (the
// NVFP4 layouts hold the same codes and scales under different names and conventions).
enum class CodeFamily : std::uint8_t { Float, Nvfp4, PackedInteger, Int8, Fp8, Fp8Block, Vq };

// The quantization config that declares modules of a format (Fp8: DeepSeek's
// quant_method "fp8" with weight_block_size, docs/formats/fp8-block.md; Vq: the `vq` entry
// of a compressed-tensors quantization_config, docs/formats/vq.md).
enum class ConfigGroup : std::uint8_t { None, Modelopt, CompressedTensors, Fp8, Vq };

// Where a VQ module's codebook travels among its parameters: the codebook is a tensor of its
// own ("vq_codebooks.vq2"), shared by many modules, that the config names per module; readers
// add it under this name (vq_declaration.h) before the format's check runs.
inline constexpr const char* kVqCodebookParameter = "vq_codebook";

// How a stored per-tensor scale (NVFP4's global and input scales) relates to the multiplier
// the codes decode with: modelopt stores the multiplier itself, compressed-tensors its
// reciprocal (docs/formats/modelopt-nvfp4.md, "Two-level scales";
// docs/formats/compressed-tensors.md, "nvfp4-pack-quantized").
enum class ScaleConvention : std::uint8_t { None, Multiplier, Reciprocal };

// What a dequantizer is asked to do for one quantized Linear.
struct DequantizeRequest {
  WeightLayout layout = WeightLayout::Nvfp4Modelopt;
  std::uint64_t rows = 0, cols = 0;
  int bits = 0;              // pack-quantized only
  std::uint64_t groups = 0;  // pack-quantized and vq scale columns
  DType dtype = DType::BF16;
  // vq: the tier the codes are in (d and K from the codebook's [K, d]; bits = index bits).
  std::optional<VqTier> vq_tier;
};

// A quantized Linear's stored tensors, checked against each other (WeightFormat::check).
struct QuantizedWeight {
  DequantizeRequest request;
  // The format's parameters in descriptor order (code tensor, then companions), then the
  // optional companion when stored: what libquant's decoder for the format reads.
  std::vector<TensorLocation> sources;
};

// What a writer needs, besides the Linear's [rows, cols], to lay out its tensors.
struct WeightEncoding {
  DType source_dtype = DType::BF16;  // pack-quantized scales keep the weight's dtype
  IntegerOptions integer{};          // pack-quantized
  bool activations = false;          // NVFP4: a static input scale too (W4A4)
  std::optional<VqTier> vq_tier;     // vq: the module's tier (the codes' width)
};

struct WeightFormat {
  WeightLayout layout = WeightLayout::Unrecognized;
  // Inspect label, plan and message text: "nvfp4-modelopt", "pack-quantized", "dense".
  const char* name = "";
  CodeFamily codes = CodeFamily::Float;
  ConfigGroup config = ConfigGroup::None;
  // The parameter holding the codes ("weight", "weight_packed"), then the companions every
  // module of the format stores, in the order our writers give them.
  std::vector<std::string> parameters{};
  // The companion some modules add (NVFP4's static input scale, pack-quantized zero points);
  // empty when the format has none.
  std::string optional_parameter{};
  // NVFP4: the per-tensor global scale's parameter and how it relates to the decode
  // multiplier (the input scale follows the same convention).
  std::string global_scale{};
  ScaleConvention scale_convention = ScaleConvention::None;

  // Whether a module's tensors are stored in this format (dtypes and which companions exist;
  // no data read). The registry tries formats in table order, most specific first.
  bool (*detect)(const ModuleParameters& parameters) = nullptr;
  // The weight's [out, in] as engines see it; nullopt when the tensors do not say. May read
  // one small companion (pack-quantized weight_shape, 16 bytes).
  std::optional<Shape> (*logical_shape)(const ModuleParameters& parameters) = nullptr;
  // The inspect label of one module, when it says more than `name` ("pack-quantized-int4");
  // `declared_bits` is the config's width for the module (0: none). nullptr: `name`.
  std::string (*label)(const ModuleParameters& parameters, int declared_bits) = nullptr;
  // The tensors a [rows, cols] Linear `module` becomes; nullptr for formats quantsmith reads
  // but does not write.
  std::vector<TensorSpec> (*output_specs)(const std::string& module, std::uint64_t rows,
                                          std::uint64_t cols,
                                          const WeightEncoding& encoding) = nullptr;
  // Checks the module's tensors against each other and says what to decode from which of
  // them; throws BadInput `kind` naming the file and tensor at fault (a missing companion: the
  // module's tensor name). `declared_bits` as for `label`. nullptr for formats quantsmith does
  // not decode (libquant has no decoder for them).
  QuantizedWeight (*check)(const std::string& module, const ModuleParameters& parameters,
                           int declared_bits, const std::string& kind) = nullptr;

  // A quantized format quantsmith decodes (and so the runner loads, mtp extract dequantizes,
  // validate --ref compares).
  bool decodable() const { return check != nullptr; }
  // `parameters`, plus `optional_parameter` when `with_optional` and the format has one.
  std::vector<std::string> parameter_names(bool with_optional = false) const;
  // Every parameter name the format can store.
  bool stores(const std::string& parameter) const;
};

// The registry, in detection order (most specific first). Unrecognized has no entry.
std::span<const WeightFormat* const> weight_formats();
// The descriptor of `layout`; Unrecognized gets a descriptor with no parameters and no
// functions, named "unrecognized".
const WeightFormat& weight_format(WeightLayout layout);
// The first format whose `detect` accepts the module's tensors, or the Unrecognized one.
const WeightFormat& detect_weight_format(const ModuleParameters& parameters);
// The format of `codes` that the config convention `format` declares (the NVFP4 layout a
// modelopt or compressed-tensors checkpoint stores); throws Internal when there is none.
const WeightFormat& weight_format_for(CodeFamily codes, OutputFormat format);
// Shorthand: the tensors an NVFP4 Linear `module` of [rows, cols] becomes in the layout of
// `format` (with its static input scale when `activations`).
std::vector<TensorSpec> nvfp4_output_specs(const std::string& module, std::uint64_t rows,
                                           std::uint64_t cols, OutputFormat format,
                                           bool activations = false);
// The tensor holding a module's codes: the first code parameter of any format ("weight", then
// "weight_packed", in registry order) the module stores, whatever its format; nullptr when it
// stores none (norms, biases).
const TensorLocation* code_tensor(const ModuleParameters& parameters);
// Every parameter any format stores a weight in ("weight", "weight_packed", "weight_scale",
// ...), each once, in registry order: what a reader looks up beside a Linear's name.
const std::vector<std::string>& weight_parameter_names();

}  // namespace qs
