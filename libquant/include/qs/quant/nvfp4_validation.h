#pragma once
// `validate` for quantized checkpoints: NVFP4 in either layout (docs/formats/modelopt-nvfp4.md,
// "Checkpoint tensors"; docs/formats/compressed-tensors.md, "nvfp4-pack-quantized") and
// compressed-tensors pack-quantized integers ("pack-quantized"), added to the report of
// qs/ckpt/validate/validation.h:
//
//   nvfp4 (headers + the small scale tensors, always):
//     nvfp4.missing_tensor        a module with some NVFP4 tensors lacks another
//     nvfp4.dtype_mismatch        codes not U8, block scales not F8_E4M3, global scale not F32
//     nvfp4.shape_mismatch        codes not [N, K/2], scales not [N, K/16], global not a scalar
//     nvfp4.bad_global_scale      a global (or input) scale that is not finite and > 0
//     nvfp4.bad_block_scale       a block scale byte that is NaN (0x7F/0xFF) or negative
//     nvfp4.fused_scale_mismatch  engine-fused members (q_a/kv_a, gate/up) with different
//                                 global or input scales
//   int (modules with an I32 weight_packed or a weight_shape; headers, weight_shape, the
//   scales, and codes / zero points only where their rows end in padding):
//     int.missing_tensor          weight_packed, weight_scale or weight_shape missing
//     int.dtype_mismatch          packed / zero points not I32, weight_shape not I64, scales
//                                 not BF16/F16/F32
//     int.shape_mismatch          weight_shape [N, K] against weight_packed [N, ⌈K/⌊32/b⌋⌉],
//                                 scales [N, G] with G dividing K, zero points [⌈N/⌊32/b⌋⌉, G]
//     int.config_mismatch         quantization_config not compressed-tensors or unreadable;
//                                 the module not covered by a pack-quantized int group; zero
//                                 points present for a symmetric group or absent for an
//                                 asymmetric one; G not what strategy / group_size give
//     int.bad_scale               a scale that is not finite and > 0
//     int.padding                 bits set outside the fields of a packed row (or zero point
//                                 column): past its last field, or in the top 32 mod b bits
//                                 every word leaves unused for 3, 5, 6 and 7 bits
//   config (a quantization_config of compressed-tensors or modelopt, or hf_quant_config.json;
//   headers and config only; every Linear — a Linear role with a 2-D weight, or any module
//   stored quantized — must resolve to the group whose scheme its tensors hold, or be ignored
//   when dense, under compressed-tensors' matching and under vLLM's fused-name matching):
//     config.uncovered_linear     neither targeted nor ignored (on either side)
//     config.multiply_covered     compressed-tensors and vLLM resolve it differently (another
//                                 group, or ignored on one side only), or it is ignored and
//                                 also targeted by a name / regex
//     config.scheme_mismatch      NVFP4 tensors ignored (excluded, modelopt) or in a group that
//                                 is not nvfp4-pack-quantized; a dense Linear targeted (not
//                                 excluded, modelopt)
//     config.fused_split          members of one engine-fused module (fused_qkv_a_proj,
//                                 gate_up_proj, a layer's FusedMoE) resolved to different
//                                 groups or only partly ignored; the disagreement it causes
//                                 is not reported again as multiply_covered
//     config.undeclared_quantization  NVFP4 or pack-quantized tensors, but no quantization
//                                 config (or one of another quant_method) declares them
//     config.unreadable           a config that cannot be read (int.config_mismatch instead
//                                 when there are pack-quantized modules)
//   Ownership: how a pack-quantized module's compressed-tensors group fits its tensors
//   (covered at all, format, type, symmetry, group size, bits) is int.config_mismatch's; the
//   config check reports only vLLM disagreeing with that group for those modules.
//   The bit width b is the covering config group's num_bits, else the one the packed width
//   implies. There is no zero-point range check: a b-bit field minus 2^(b-1) is always in
//   [-2^(b-1), 2^(b-1)-1], so the only way to store a bad one is padding.
//   vq (modules with vq_codes / vq_scales, or a quantization_config.vq; reads the codes, scales
//   and codebooks; src/validation/vq_checks.h lists the kinds: vq.config, vq.unknown_tier,
//   vq.undeclared_module, vq.missing_module, vq.invalid, vq.code_range, vq.bad_scale,
//   vq.bad_codebook). VQ modules must be in the compressed-tensors ignore list (the config
//   check reports config.scheme_mismatch when a group targets one).
//   reference (with a BF16 reference checkpoint, reads everything, tensor by tensor):
//     reference.missing_tensor    the reference lacks a module's weight
//     reference.shape_mismatch    the reference's weight is not [N, K]
//     reference.error_too_large   dequantized NVFP4 or INT weight's relative error ‖W−Ŵ‖/‖W‖
//                                 above the limit
//     reference.mismatch          an unquantized tensor that differs from the reference (a
//                                 float cast of it, e.g. F32 weights_proj, counts as equal)

#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/validate/validation.h"

namespace qs {

// NVFP4 with max scales gives ~0.09 relative error on trained weights (20–21 dB SNR on the
// bundled model), INT4 g128 ~0.1, INT8 ~0.008; a wrong global scale or scrambled codes give
// 0.5 and more.
inline constexpr double kDefaultMaxRelativeError = 0.2;

struct ReferenceComparison {
  std::string tensor;     // the source weight's name (module.weight)
  double relative_error;  // ‖W − Ŵ‖ / ‖W‖
  double snr_db;
  std::string format;  // "nvfp4", "int4", "int8", ...: the text summary is per format
};

struct Nvfp4ValidationOptions {
  const Checkpoint* reference = nullptr;
  double max_relative_error = kDefaultMaxRelativeError;
  // VQ codes of 1 to 3 bits are far from their source by design (relative error ~0.25 at
  // 3 bits to ~0.8 at 1 bit, more under GPTQ, which trades weight error for output error), so
  // VQ weights are held to max_relative_error only when this is set (validate: when
  // --max-relative-error is given); otherwise only an error as large as the weight fails.
  bool limit_vq = false;
};

// Adds findings to `report` (and its checks_run: "nvfp4" / "int" when such modules exist,
// "reference"); returns the per-weight comparisons when a reference is given. Named for the
// format it first checked; it covers the integer modules too.
std::vector<ReferenceComparison> validate_nvfp4(const Checkpoint& checkpoint,
                                                const Nvfp4ValidationOptions& options,
                                                ValidationReport& report);

}  // namespace qs
