#pragma once
// The structural checks of `validate` for compressed-tensors pack-quantized integer modules
// (docs/formats/compressed-tensors.md, "pack-quantized"); the "int" findings listed in
// qs/quant/nvfp4_validation.h. Internal to libquant: nvfp4_validation.cpp calls it and then
// compares the decodable modules with the reference.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/validate/validation.h"

namespace qs::validation {

// The pack-quantized tensors of one module, as found, and (once checked) what they hold.
struct PackQuantizedModule {
  std::optional<TensorLocation> packed;
  std::optional<TensorLocation> scales;
  std::optional<TensorLocation> shape;
  std::optional<TensorLocation> zeros;
  int bits = 0;
  std::uint64_t rows = 0, cols = 0, groups = 0;
  bool decodable = false;  // dtypes and shapes consistent: intq::unpack can read it
};

// Finds the modules with an I32 weight_packed or a weight_shape (so one that lost its codes is
// still seen), except `nvfp4_modules` (compressed-tensors NVFP4 also has a weight_packed), and
// checks them against each other and config.json. Adds "int" to report.checks_run when there
// are any. Returns every module found, decodable or not.
std::map<std::string, PackQuantizedModule> check_pack_quantized(
    const Checkpoint& checkpoint, const std::set<std::string>& nvfp4_modules,
    ValidationReport& report);

}  // namespace qs::validation
