#include "qs/ckpt/job/vq_preparation_state.h"

#include <fmt/format.h>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/io/safetensors.h"
#include "qs/ckpt/io/shard_scan.h"
#include "qs/ckpt/job/output_directory.h"

namespace qs {

namespace {

nlohmann::ordered_json tier_json(const VqTier& tier) {
  return {{"d", tier.d}, {"k", tier.k}, {"codebook", vq_codebook_kind_name(tier.kind)}};
}

VqTier tier_from(const std::string& name, const nlohmann::json& json, const std::string& file) {
  VqTier tier;
  tier.name = name;
  tier.d = json.at("d").get<std::uint32_t>();
  tier.k = json.at("k").get<std::uint32_t>();
  const auto kind = parse_vq_codebook_kind(json.at("codebook").get<std::string>());
  if (!kind)
    throw_bad_input("job.invalid", fmt::format("tier {}: unknown codebook kind", name), file);
  tier.kind = *kind;
  return tier;
}

std::string digest_of(const std::filesystem::path& path) {
  const auto bytes = read_text_file(path);
  return xxh3_128_hex(std::string_view(bytes));
}

}  // namespace

std::vector<std::string> vq_preparation_files() {
  return {std::string(kVqCodebooksFileName), std::string(kVqPreparationFileName)};
}

void save_vq_preparation(const std::filesystem::path& directory, const std::string& fingerprint,
                         const VqAssignment& assignment, const nlohmann::json& report) {
  // Codebooks first (the JSON names their digest, so it must follow them).
  std::vector<TensorSpec> specs;
  std::vector<std::vector<std::byte>> values;
  for (const auto& [name, codebook] : assignment.codebooks) {
    const auto& tier = codebook.tier;
    specs.push_back({name, codebook.dtype, {tier.k, tier.d}});
    auto& bytes = values.emplace_back(specs.back().byte_size());
    encode_from_f32(codebook.dtype, codebook.codewords, bytes);
  }
  const auto codebooks_path = directory / kVqCodebooksFileName;
  SafetensorsWriter writer(codebooks_path, specs);
  for (std::size_t i = 0; i < specs.size(); ++i) writer.write_tensor(specs[i].name, values[i]);
  writer.commit();

  // Built apart and put together last: an ordered_json's members move when one is added.
  nlohmann::ordered_json tiers = nlohmann::ordered_json::object();
  nlohmann::ordered_json codebooks = nlohmann::ordered_json::object();
  for (const auto& [name, codebook] : assignment.codebooks) {
    tiers[codebook.tier.name] = tier_json(codebook.tier);
    codebooks[name] = {{"tier", codebook.tier.name}};
  }
  nlohmann::ordered_json modules = nlohmann::ordered_json::object();
  for (const auto& [module, tier] : assignment.tier_of) {
    tiers[tier.name] = tier_json(tier);
    modules[module] = {{"tier", tier.name}, {"codebook", assignment.codebook_of.at(module)}};
  }
  nlohmann::ordered_json json;
  json["fingerprint"] = fingerprint;
  json["codebooks_xxh3_128"] = digest_of(codebooks_path);
  json["tiers"] = std::move(tiers);
  json["codebooks"] = std::move(codebooks);
  json["modules"] = std::move(modules);
  json["report"] = report;
  write_file_atomically(directory / kVqPreparationFileName, json.dump(1) + "\n");
}

void remove_vq_preparation(const std::filesystem::path& directory) {
  // The JSON first: without it the codebooks file is never read.
  for (const auto name : {kVqPreparationFileName, kVqCodebooksFileName}) {
    std::error_code error;
    std::filesystem::remove(directory / name, error);
    if (error) throw_output_error(error, "remove", directory / name);
  }
}

std::optional<SavedVqPreparation> load_vq_preparation(const std::filesystem::path& directory,
                                                      const std::string& fingerprint) {
  const auto json_path = directory / kVqPreparationFileName;
  if (!output_path_exists(json_path)) return std::nullopt;
  const std::string file = json_path.string();
  const auto json = read_json_file(json_path, "job.invalid");
  try {
    if (json.at("fingerprint").get<std::string>() != fingerprint)
      throw_bad_input("job.fingerprint_mismatch",
                      "the output holds a VQ preparation (codebooks, tiers) made from another "
                      "recipe, statistics file or source; use --force to start over or choose "
                      "another output directory",
                      file);
    const auto codebooks_path = directory / kVqCodebooksFileName;
    if (!output_path_exists(codebooks_path) ||
        digest_of(codebooks_path) != json.at("codebooks_xxh3_128").get<std::string>())
      throw_bad_input("job.invalid",
                      fmt::format("{} is missing or differs from the one the preparation saved; "
                                  "use --force to start over",
                                  kVqCodebooksFileName),
                      file);
    std::map<std::string, VqTier> tiers;
    for (const auto& [name, tier] : json.at("tiers").items())
      tiers.emplace(name, tier_from(name, tier, file));
    SavedVqPreparation saved;
    SafetensorsFile codebooks(codebooks_path);
    for (const auto& [name, entry] : json.at("codebooks").items()) {
      const auto* info = codebooks.header().find(name);
      const auto& tier = tiers.at(entry.at("tier").get<std::string>());
      const Shape expected{tier.k, tier.d};
      if (!info || info->shape != expected)
        throw_bad_input("job.invalid", "codebook missing or of the wrong shape",
                        codebooks_path.string(), name);
      VqCodebook codebook;
      codebook.tier = tier;
      codebook.dtype = info->dtype;
      codebook.codewords.resize(info->element_count());
      decode_to_f32(info->dtype, codebooks.read(*info), codebook.codewords);
      saved.assignment.codebooks.emplace(name, std::move(codebook));
    }
    for (const auto& [module, entry] : json.at("modules").items()) {
      saved.assignment.tier_of.emplace(module, tiers.at(entry.at("tier").get<std::string>()));
      const auto codebook = entry.at("codebook").get<std::string>();
      if (!saved.assignment.codebooks.contains(codebook))
        throw_bad_input("job.invalid", fmt::format("module {} names a codebook it lacks", module),
                        file, codebook);
      saved.assignment.codebook_of.emplace(module, codebook);
    }
    saved.report = json.value("report", nlohmann::json::object());
    return saved;
  } catch (const nlohmann::json::exception& error) {
    throw_bad_input("job.invalid", fmt::format("malformed VQ preparation: {}", error.what()), file);
  } catch (const std::out_of_range&) {
    throw_bad_input("job.invalid", "malformed VQ preparation: an entry names an unknown tier",
                    file);
  }
}

}  // namespace qs
