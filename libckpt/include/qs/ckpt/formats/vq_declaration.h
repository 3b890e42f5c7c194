#pragma once
// What a checkpoint's config.json says about its vector-quantized modules
// (`quantization_config.vq`, docs/formats/vq.md): the tiers in use and, per module, its tier
// and the codebook tensor its codes index. The registry's VQ check needs the codebook beside
// the module's own tensors; readers (the runner, mtp extract, validate, dequantize) attach it
// here, checked against the declared tier, before they call WeightFormat::check.

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "qs/ckpt/formats/vq_tier.h"
#include "qs/ckpt/formats/weight_format.h"
#include "qs/ckpt/io/checkpoint.h"

namespace qs {

inline constexpr int kVqConfigVersion = 1;
inline constexpr std::string_view kVqPacking = "lsb_first_u32";

struct VqModuleDeclaration {
  std::string tier;      // a key of VqDeclaration::tiers()
  std::string codebook;  // the codebook tensor's name ("vq_codebooks.vq2")
};

class VqDeclaration {
 public:
  VqDeclaration() = default;
  // Parses config.json's quantization_config.vq; a config without one declares nothing.
  // Throws BadInput "vq.config" naming `file` for a malformed entry, and "vq.unknown_tier"
  // naming the module for a module whose tier the config does not define.
  static VqDeclaration from_config(const nlohmann::json& config, const std::string& file);
  // The declaration of `checkpoint`'s config.json.
  static VqDeclaration of(const Checkpoint& checkpoint);

  bool empty() const { return modules_.empty(); }
  const std::map<std::string, VqTier>& tiers() const { return tiers_; }
  const std::map<std::string, VqModuleDeclaration>& modules() const { return modules_; }
  // nullptr when `module` is not declared VQ.
  const VqModuleDeclaration* module(const std::string& module) const;
  const VqTier* tier_of(const std::string& module) const;

  // `parameters` with the module's codebook added under kVqCodebookParameter when the module is
  // declared VQ (unchanged otherwise), after checking the codebook against the declared tier:
  // present in the checkpoint, F16 or BF16, shape [K, d]. Throws BadInput `kind` naming the
  // file and tensor at fault.
  ModuleParameters with_codebook(const Checkpoint& checkpoint, const std::string& module,
                                 const ModuleParameters& parameters,
                                 const std::string& kind) const;

 private:
  std::map<std::string, VqTier> tiers_;
  std::map<std::string, VqModuleDeclaration> modules_;
};

// The config's `quantization_config.vq` entry for `modules` (tiers in use and each module's
// tier and codebook), and the `extra_config` markers ({"bits", "format": "vq", "d"}) the
// published GLM-5.2 VQ release uses, keyed by module.
struct VqModuleEntry {
  std::string module;
  VqTier tier;
  std::string codebook;
};
nlohmann::json vq_config_entry(const std::vector<VqModuleEntry>& modules);
nlohmann::json vq_extra_config(const std::vector<VqModuleEntry>& modules);

}  // namespace qs
