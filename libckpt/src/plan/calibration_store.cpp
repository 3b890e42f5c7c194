#include "qs/ckpt/plan/calibration_store.h"

#include <fmt/format.h>
#include <zstd.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/core/json_input.h"

namespace qs {
namespace {

constexpr char kMagic[8] = {'Q', 'S', 'C', 'A', 'L', 'I', 'B', '1'};
constexpr int kCompressionLevel = 3;

}  // namespace

struct CalibrationStoreWriter::State {
  AtomicOutputFile file;
  CalibrationInfo info;
  std::vector<CalibrationEntry> entries;
  std::map<std::uint64_t, std::vector<std::uint64_t>> routing;
  std::uint64_t position = 0;
};

CalibrationStoreWriter::CalibrationStoreWriter(std::filesystem::path destination,
                                               CalibrationInfo info)
    : state_(new State{AtomicOutputFile(std::move(destination)), std::move(info), {}, {}, 0}) {
  state_->file.write(std::as_bytes(std::span(kMagic)));
  state_->position = sizeof(kMagic);
}

CalibrationStoreWriter::~CalibrationStoreWriter() = default;

void CalibrationStoreWriter::add(const std::string& module, std::uint64_t in_features,
                                 std::uint64_t tokens, const std::vector<double>& second_moments,
                                 double input_amax) {
  const std::size_t raw = second_moments.size() * sizeof(double);
  std::vector<char> frame(ZSTD_compressBound(raw));
  const std::size_t size =
      ZSTD_compress(frame.data(), frame.size(), second_moments.data(), raw, kCompressionLevel);
  if (ZSTD_isError(size))
    throw Error(ErrorClass::Internal, "calibration.compress", ZSTD_getErrorName(size),
                state_->file.destination().string(), module);
  state_->file.write(std::as_bytes(std::span(frame.data(), size)));
  state_->entries.push_back({module, in_features, tokens, {}, state_->position, size, input_amax});
  state_->position += size;
}

void CalibrationStoreWriter::add_shared(const std::string& module, const std::string& holder,
                                        std::uint64_t tokens) {
  for (const auto& entry : state_->entries)
    if (entry.module == holder) {
      state_->entries.push_back(
          {module, entry.in_features, tokens, holder, 0, 0, entry.input_amax});
      return;
    }
  throw Error(ErrorClass::Internal, "calibration.no_holder", "shared entry before its holder", {},
              module);
}

void CalibrationStoreWriter::set_routing(std::uint64_t layer,
                                         std::vector<std::uint64_t> expert_counts) {
  state_->routing[layer] = std::move(expert_counts);
}

void CalibrationStoreWriter::commit() {
  nlohmann::json index;
  index["format"] = "quantsmith-calibration";
  index["version"] = 1;
  index["model"] = state_->info.model;
  index["token_rows"] = state_->info.token_rows;
  index["all_experts"] = state_->info.all_experts;
  index["accumulation"] = state_->info.accumulation;
  auto& entries = index["entries"] = nlohmann::json::array();
  for (const auto& entry : state_->entries)
    entries.push_back({{"module", entry.module},
                       {"in_features", entry.in_features},
                       {"tokens", entry.tokens},
                       {"shared_with", entry.shared_with},
                       {"offset", entry.offset},
                       {"compressed_bytes", entry.compressed_bytes},
                       {"input_amax", entry.input_amax}});
  auto& routing = index["routing"] = nlohmann::json::object();
  for (const auto& [layer, counts] : state_->routing) routing[std::to_string(layer)] = counts;
  const std::string text = index.dump();
  state_->file.write(text);
  const std::uint64_t length = text.size();
  state_->file.write(std::as_bytes(std::span(&length, 1)));
  state_->file.commit();
}

CalibrationStore CalibrationStore::open(const std::filesystem::path& path) {
  const ReadOnlyFile file(path);
  auto invalid = [&](const std::string& why) {
    throw_bad_input("calibration.invalid", "not a quantsmith calibration file: " + why,
                    path.string());
  };
  if (file.size() < sizeof(kMagic) + 8) invalid("too short");
  char magic[8];
  file.read_at(0, std::as_writable_bytes(std::span(magic)));
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) invalid("wrong magic");
  std::uint64_t length = 0;
  file.read_at(file.size() - 8, std::as_writable_bytes(std::span(&length, 1)));
  if (length > file.size() - 16) invalid("index length out of range");
  std::string text(length, '\0');
  file.read_at(file.size() - 8 - length, std::as_writable_bytes(std::span(text.data(), length)));
  CalibrationStore store;
  store.path_ = path;
  const auto index = parse_json_input(text, "calibration.invalid", path.string());
  try {
    if (index.at("format") != "quantsmith-calibration" || index.at("version") != 1)
      invalid("unknown format or version");
    store.info_ = {index.at("model"), index.at("token_rows"), index.at("all_experts"),
                   index.at("accumulation")};
    for (const auto& entry : index.at("entries"))
      store.entries_.push_back({entry.at("module"), entry.at("in_features"), entry.at("tokens"),
                                entry.at("shared_with"), entry.at("offset"),
                                entry.at("compressed_bytes"), entry.value("input_amax", 0.0)});
    for (const auto& [layer, counts] : index.at("routing").items())
      store.routing_[std::stoull(layer)] = counts.get<std::vector<std::uint64_t>>();
  } catch (const nlohmann::json::exception& error) {
    invalid(error.what());
  }
  return store;
}

const CalibrationEntry* CalibrationStore::find(const std::string& module) const {
  for (const auto& entry : entries_)
    if (entry.module == module) return &entry;
  return nullptr;
}

std::vector<double> CalibrationStore::second_moments(const std::string& module) const {
  const CalibrationEntry* entry = find(module);
  if (!entry)
    throw_bad_input("calibration.missing_module", "no statistics for this module", path_.string(),
                    module);
  if (!entry->shared_with.empty()) return second_moments(entry->shared_with);
  const ReadOnlyFile file(path_);
  std::vector<char> frame(entry->compressed_bytes);
  file.read_at(entry->offset, std::as_writable_bytes(std::span(frame)));
  std::vector<double> values(entry->in_features * entry->in_features);
  const std::size_t size =
      ZSTD_decompress(values.data(), values.size() * sizeof(double), frame.data(), frame.size());
  if (ZSTD_isError(size) || size != values.size() * sizeof(double))
    throw_bad_input("calibration.invalid", "a damaged statistics frame", path_.string(), module);
  return values;
}

}  // namespace qs
