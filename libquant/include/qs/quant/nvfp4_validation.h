#pragma once
// `validate` for NVFP4 checkpoints in either layout (formats-modelopt-nvfp4.md §2.1,
// formats-compressed-tensors.md §4.1), added to the report of qs/ckpt/validation.h:
//
//   nvfp4 (headers + the small scale tensors, always):
//     nvfp4.missing_tensor        a module with some NVFP4 tensors lacks another
//     nvfp4.dtype_mismatch        codes not U8, block scales not F8_E4M3, global scale not F32
//     nvfp4.shape_mismatch        codes not [N, K/2], scales not [N, K/16], global not a scalar
//     nvfp4.bad_global_scale      a global (or input) scale that is not finite and > 0
//     nvfp4.bad_block_scale       a block scale byte that is NaN (0x7F/0xFF) or negative
//     nvfp4.fused_scale_mismatch  engine-fused members (q_a/kv_a, gate/up) with different
//                                 global or input scales
//   reference (with a BF16 reference checkpoint, reads everything, tensor by tensor):
//     reference.missing_tensor    the reference lacks a module's weight
//     reference.error_too_large   dequantized NVFP4 weight's relative error ‖W−Ŵ‖/‖W‖ above
//                                 the limit
//     reference.mismatch          an unquantized tensor that differs from the reference (a
//                                 float cast of it, e.g. F32 weights_proj, counts as equal)

#include <string>
#include <vector>

#include "qs/ckpt/checkpoint.h"
#include "qs/ckpt/validation.h"

namespace qs {

// NVFP4 with max scales gives ~0.09 relative error on trained weights (20–21 dB SNR on the
// bundled model); a wrong global scale or scrambled codes give 0.5 and more.
inline constexpr double kDefaultMaxRelativeError = 0.2;

struct ReferenceComparison {
  std::string tensor;     // the source weight's name (module.weight)
  double relative_error;  // ‖W − Ŵ‖ / ‖W‖
  double snr_db;
};

struct Nvfp4ValidationOptions {
  const Checkpoint* reference = nullptr;
  double max_relative_error = kDefaultMaxRelativeError;
};

// Adds findings to `report` (and its checks_run); returns the per-weight comparisons when a
// reference is given.
std::vector<ReferenceComparison> validate_nvfp4(const Checkpoint& checkpoint,
                                                const Nvfp4ValidationOptions& options,
                                                ValidationReport& report);

}  // namespace qs
