#pragma once
// The "vq" check of `validate` (docs/formats/vq.md): config.json's quantization_config.vq is
// readable and names a known tier for every module; every module stored as VQ is declared,
// its codebook is present, F16/BF16 and [K, d] of its tier, its codes and scales have the
// tier's shapes; every code is below K (the codes are read and unpacked); scales and codebook
// values are finite; and every declared module is stored. Internal to libquant:
// validate_nvfp4() calls it.
//   vq.config             quantization_config.vq unreadable (or a module of an unknown tier:
//                         vq.unknown_tier)
//   vq.undeclared_module  VQ tensors the config does not declare
//   vq.missing_module     a declared module with no VQ tensors
//   vq.invalid            codebook missing or of the wrong dtype or shape, codes or scales of
//                         the wrong dtype or shape
//   vq.code_range         a code ≥ K (naming the row and position)
//   vq.bad_scale          a scale that is not finite or negative
//   vq.bad_codebook       a codeword value that is not finite

#include <map>
#include <string>

#include "qs/ckpt/formats/quantized_weight.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/validate/validation.h"

namespace qs::validation {

// The modules that passed (module path → checked weight), for `--ref` to decode.
std::map<std::string, QuantizedWeight> check_vq(const Checkpoint& checkpoint,
                                                ValidationReport& report);

}  // namespace qs::validation
