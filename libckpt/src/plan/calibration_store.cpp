#include "qs/ckpt/plan/calibration_store.h"

#include <fmt/format.h>
#include <zstd.h>

#include <cstring>
#include <span>
#include <nlohmann/json.hpp>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/core/json_input.h"

namespace qs {
namespace {

constexpr char kMagic[8] = {'Q', 'S', 'C', 'A', 'L', 'I', 'B', '1'};
constexpr int kCompressionLevel = 3;
constexpr std::uint64_t kFullMatrixVersion = 1;  // full K·K f64 (still read)
constexpr std::uint64_t kUpperTriangleVersion = 2;
constexpr std::uint64_t kMaxInFeatures = 1ull << 20;  // guards K² against garbage indexes

std::uint64_t upper_count(std::uint64_t k) { return k * (k + 1) / 2; }

// The upper triangle of a row-major K·K matrix, row by row, in the storage precision.
template <typename Stored>
std::vector<Stored> pack_upper(std::span<const double> full, std::uint64_t k) {
  std::vector<Stored> packed;
  packed.reserve(upper_count(k));
  for (std::uint64_t i = 0; i < k; ++i)
    for (std::uint64_t j = i; j < k; ++j) packed.push_back(static_cast<Stored>(full[i * k + j]));
  return packed;
}

template <typename Stored>
std::vector<double> unpack_upper(std::span<const Stored> packed, std::uint64_t k) {
  std::vector<double> full(k * k);
  std::size_t next = 0;
  for (std::uint64_t i = 0; i < k; ++i)
    for (std::uint64_t j = i; j < k; ++j)
      full[i * k + j] = full[j * k + i] = static_cast<double>(packed[next++]);
  return full;
}

}  // namespace

const char* statistics_precision_name(StatisticsPrecision precision) {
  return precision == StatisticsPrecision::F32 ? "f32" : "f64";
}

std::optional<StatisticsPrecision> parse_statistics_precision(std::string_view text) {
  if (text == "f64") return StatisticsPrecision::F64;
  if (text == "f32") return StatisticsPrecision::F32;
  return std::nullopt;
}

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
  if (second_moments.size() != in_features * in_features)
    throw Error(ErrorClass::Internal, "calibration.shape", "matrix size is not K·K", {}, module);
  std::vector<std::byte> packed;
  if (state_->info.precision == StatisticsPrecision::F32) {
    const auto values = pack_upper<float>(second_moments, in_features);
    packed.assign(std::as_bytes(std::span(values)).begin(), std::as_bytes(std::span(values)).end());
  } else {
    const auto values = pack_upper<double>(second_moments, in_features);
    packed.assign(std::as_bytes(std::span(values)).begin(), std::as_bytes(std::span(values)).end());
  }
  std::vector<char> frame(ZSTD_compressBound(packed.size()));
  const std::size_t size = ZSTD_compress(frame.data(), frame.size(), packed.data(), packed.size(),
                                         kCompressionLevel);
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
  index["version"] = kUpperTriangleVersion;
  index["precision"] = statistics_precision_name(state_->info.precision);
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
    const std::uint64_t version = index.at("version");
    if (index.at("format") != "quantsmith-calibration" ||
        (version != kFullMatrixVersion && version != kUpperTriangleVersion))
      invalid("unknown format or version");
    store.info_ = {index.at("model"), index.at("token_rows"), index.at("all_experts"),
                   index.at("accumulation")};
    store.info_.version = version;
    if (version == kUpperTriangleVersion) {
      const auto precision = parse_statistics_precision(index.at("precision").get<std::string>());
      if (!precision) invalid("unknown precision");
      store.info_.precision = *precision;
    }
    const std::uint64_t frames_end = file.size() - 8 - length;
    for (const auto& entry : index.at("entries")) {
      store.entries_.push_back({entry.at("module"), entry.at("in_features"), entry.at("tokens"),
                                entry.at("shared_with"), entry.at("offset"),
                                entry.at("compressed_bytes"), entry.value("input_amax", 0.0)});
      const auto& added = store.entries_.back();
      if (added.in_features == 0 || added.in_features > kMaxInFeatures)
        invalid(fmt::format("entry {} has in_features {}", added.module, added.in_features));
      if (added.shared_with.empty() &&
          (added.offset < sizeof(kMagic) || added.offset > frames_end ||
           added.compressed_bytes > frames_end - added.offset))
        invalid(fmt::format("the matrix of {} lies outside the file (truncated?)", added.module));
    }
    for (const auto& entry : store.entries_)
      if (!entry.shared_with.empty()) {
        const auto* holder = store.find(entry.shared_with);
        if (!holder || !holder->shared_with.empty() || holder->in_features != entry.in_features)
          invalid(fmt::format("{} shares a matrix with {}, which holds none of its width",
                              entry.module, entry.shared_with));
      }
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
  const std::uint64_t k = entry->in_features;
  // Decodes into `values` and checks the frame held exactly that many bytes.
  auto decode = [&](auto& values) {
    const std::size_t expected = values.size() * sizeof(values[0]);
    const std::size_t size = ZSTD_decompress(values.data(), expected, frame.data(), frame.size());
    if (ZSTD_isError(size) || size != expected)
      throw_bad_input("calibration.invalid", "a damaged statistics frame", path_.string(), module);
  };
  if (info_.version == kFullMatrixVersion) {
    std::vector<double> values(k * k);
    decode(values);
    return values;
  }
  if (info_.precision == StatisticsPrecision::F32) {
    std::vector<float> packed(upper_count(k));
    decode(packed);
    return unpack_upper<float>(packed, k);
  }
  std::vector<double> packed(upper_count(k));
  decode(packed);
  return unpack_upper<double>(packed, k);
}

}  // namespace qs
