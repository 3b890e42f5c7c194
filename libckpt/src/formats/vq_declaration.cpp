// config.json's `quantization_config.vq` (qs/ckpt/formats/vq_declaration.h).
#include "qs/ckpt/formats/vq_declaration.h"

#include <fmt/format.h>

#include <cmath>

#include "qs/ckpt/core/error.h"

namespace qs {
namespace {

[[noreturn]] void fail_config(const std::string& file, const std::string& message,
                              const std::string& tensor = {}) {
  throw_bad_input("vq.config", "quantization_config.vq: " + message, file, tensor);
}

std::uint32_t read_count(const nlohmann::json& entry, const char* key, const std::string& where,
                         const std::string& file) {
  if (!entry.contains(key) || !entry.at(key).is_number_unsigned())
    fail_config(file, fmt::format("{} needs a non-negative integer '{}'", where, key));
  const auto value = entry.at(key).get<std::uint64_t>();
  if (value > (1ull << 30)) fail_config(file, fmt::format("{}: '{}' {} is too large", where, key, value));
  return static_cast<std::uint32_t>(value);
}

// A JSON number with no fraction as an integer, so "bits": 2 reads as engines expect.
nlohmann::json bits_value(double bits) {
  if (bits == std::floor(bits)) return static_cast<std::int64_t>(bits);
  return std::round(bits * 1000.0) / 1000.0;
}

}  // namespace

VqDeclaration VqDeclaration::from_config(const nlohmann::json& config, const std::string& file) {
  VqDeclaration declaration;
  if (!config.is_object() || !config.contains("quantization_config")) return declaration;
  const auto& block = config.at("quantization_config");
  if (!block.is_object() || !block.contains("vq")) return declaration;
  const auto& vq = block.at("vq");
  if (!vq.is_object()) fail_config(file, "must be an object");
  if (vq.value("version", 0) != kVqConfigVersion)
    fail_config(file, fmt::format("version {} is not the one quantsmith reads ({})",
                                  vq.contains("version") ? vq.at("version").dump() : "missing",
                                  kVqConfigVersion));
  if (!vq.contains("norm_group") || vq.at("norm_group") != kVqScaleGroup)
    fail_config(file, fmt::format("norm_group must be {}", kVqScaleGroup));
  if (vq.value("pack", std::string()) != kVqPacking)
    fail_config(file, fmt::format("pack must be \"{}\"", kVqPacking));
  if (!vq.contains("tiers") || !vq.at("tiers").is_object())
    fail_config(file, "needs an object 'tiers'");
  for (const auto& [name, entry] : vq.at("tiers").items()) {
    const std::string where = fmt::format("tier '{}'", name);
    if (!entry.is_object()) fail_config(file, where + " must be an object");
    VqTier tier;
    tier.name = name;
    tier.d = read_count(entry, "d", where, file);
    tier.k = read_count(entry, "k", where, file);
    const auto kind = parse_vq_codebook_kind(entry.value("codebook", std::string("learned")));
    if (!kind) fail_config(file, where + ": codebook must be \"learned\" or \"uniform\"");
    tier.kind = *kind;
    if (auto problem = vq_tier_problem(tier); !problem.empty()) fail_config(file, problem);
    if (entry.contains("index_bits") && entry.at("index_bits") != tier.index_bits())
      fail_config(file, fmt::format("{}: index_bits {} but K {} needs {}", where,
                                    entry.at("index_bits").dump(), tier.k, tier.index_bits()));
    declaration.tiers_.emplace(name, tier);
  }
  if (!vq.contains("modules") || !vq.at("modules").is_object())
    fail_config(file, "needs an object 'modules'");
  for (const auto& [module, entry] : vq.at("modules").items()) {
    if (!entry.is_object() || !entry.contains("tier") || !entry.at("tier").is_string() ||
        !entry.contains("codebook") || !entry.at("codebook").is_string())
      fail_config(file, "a module's entry is {\"tier\": NAME, \"codebook\": TENSOR}", module);
    VqModuleDeclaration declared{entry.at("tier").get<std::string>(),
                                 entry.at("codebook").get<std::string>()};
    if (!declaration.tiers_.contains(declared.tier))
      throw_bad_input("vq.unknown_tier",
                      fmt::format("quantization_config.vq: the module's tier '{}' is not among "
                                  "the config's tiers",
                                  declared.tier),
                      file, module);
    declaration.modules_.emplace(module, std::move(declared));
  }
  return declaration;
}

VqDeclaration VqDeclaration::of(const Checkpoint& checkpoint) {
  return from_config(checkpoint.config(), (checkpoint.directory() / "config.json").string());
}

const VqModuleDeclaration* VqDeclaration::module(const std::string& module) const {
  const auto found = modules_.find(module);
  return found == modules_.end() ? nullptr : &found->second;
}

const VqTier* VqDeclaration::tier_of(const std::string& module) const {
  const auto* declared = this->module(module);
  return declared ? &tiers_.at(declared->tier) : nullptr;
}

ModuleParameters VqDeclaration::with_codebook(const Checkpoint& checkpoint,
                                              const std::string& module,
                                              const ModuleParameters& parameters,
                                              const std::string& kind) const {
  const auto* declared = this->module(module);
  if (!declared) return parameters;
  const VqTier& tier = tiers_.at(declared->tier);
  const auto codebook = checkpoint.find(declared->codebook);
  if (!codebook)
    throw_bad_input(kind,
                    fmt::format("the codebook of tier {} that config.json names for {} is not in "
                                "the checkpoint",
                                tier.name, module),
                    parameters.empty() ? std::string()
                                       : parameters.begin()->second.shard->path().string(),
                    declared->codebook);
  const auto& info = *codebook->info;
  const std::string file = codebook->shard->path().string();
  if (info.dtype != DType::F16 && info.dtype != DType::BF16)
    throw_bad_input(kind,
                    fmt::format("codebook of tier {} is {}; codebooks are F16 or BF16", tier.name,
                                dtype_name(info.dtype)),
                    file, info.name);
  if (info.shape != Shape{tier.k, tier.d})
    throw_bad_input(kind,
                    fmt::format("codebook of tier {} has shape {}, but the tier needs [K, d] = "
                                "[{}, {}]",
                                tier.name, shape_to_string(info.shape), tier.k, tier.d),
                    file, info.name);
  ModuleParameters with = parameters;
  with.insert_or_assign(kVqCodebookParameter, *codebook);
  return with;
}

nlohmann::json vq_config_entry(const std::vector<VqModuleEntry>& modules) {
  nlohmann::json tiers = nlohmann::json::object();
  nlohmann::json declared = nlohmann::json::object();
  for (const auto& entry : modules) {
    tiers[entry.tier.name] = {{"d", entry.tier.d},
                              {"k", entry.tier.k},
                              {"index_bits", entry.tier.index_bits()},
                              {"codebook", vq_codebook_kind_name(entry.tier.kind)}};
    declared[entry.module] = {{"tier", entry.tier.name}, {"codebook", entry.codebook}};
  }
  return {{"version", kVqConfigVersion},
          {"norm_group", kVqScaleGroup},
          {"pack", kVqPacking},
          {"tiers", std::move(tiers)},
          {"modules", std::move(declared)}};
}

nlohmann::json vq_extra_config(const std::vector<VqModuleEntry>& modules) {
  nlohmann::json extra = nlohmann::json::object();
  for (const auto& entry : modules)
    extra[entry.module] = {{"bits", bits_value(entry.tier.code_bits_per_weight())},
                           {"format", "vq"},
                           {"d", entry.tier.d}};
  return extra;
}

}  // namespace qs
