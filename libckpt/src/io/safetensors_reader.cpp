// Header validation follows the Rust reference (safetensors/src/tensor.rs) rule by rule, plus
// duplicate-name rejection; each rule has its own error kind so tests can tell them apart.

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/core/json_input.h"
#include "qs/ckpt/io/safetensors.h"

namespace qs {
namespace {

using Json = nlohmann::ordered_json;

std::uint64_t checked_multiply(std::uint64_t a, std::uint64_t b, bool& overflow) {
  std::uint64_t product = 0;
  if (__builtin_mul_overflow(a, b, &product)) overflow = true;
  return product;
}

// Parses JSON and reports the first key repeated within one object (nlohmann keeps the last
// silently, which would let two readers see different tensors).
Json parse_rejecting_duplicates(std::string_view text, const std::string& file) {
  std::vector<std::vector<std::string>> open_objects;
  std::string duplicate;
  auto on_event = [&](int, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case Json::parse_event_t::key: {
        auto& keys = open_objects.back();
        const auto& key = parsed.get_ref<const std::string&>();
        if (std::find(keys.begin(), keys.end(), key) != keys.end()) {
          if (duplicate.empty()) duplicate = key;
        } else {
          keys.push_back(key);
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  // The callback parser below builds the document; a nesting bomb is refused before it.
  check_json_nesting(text, "safetensors.header_not_json", file);
  Json root;
  try {
    root = Json::parse(text.begin(), text.end(), on_event);
  } catch (const Json::exception& error) {
    // parse_error for syntax and UTF-8, out_of_range for numbers beyond a double (1e999).
    throw_bad_input("safetensors.header_not_json",
                    fmt::format("header is not valid UTF-8 JSON ({})", error.what()), file);
  }
  if (!duplicate.empty())
    throw_bad_input("safetensors.duplicate_name", "name appears twice in the header", file,
                    duplicate);
  return root;
}

std::uint64_t unsigned_integer(const Json& value, const std::string& what, const std::string& file,
                               const std::string& tensor) {
  if (!value.is_number_unsigned())
    throw_bad_input("safetensors.tensor_entry_invalid",
                    fmt::format("{} must be non-negative integers, got {}", what, value.dump()),
                    file, tensor);
  return value.get<std::uint64_t>();
}

TensorInfo parse_tensor_entry(const std::string& name, const Json& entry, const std::string& file) {
  // The reference accepts "", but a tensor without a name cannot be reported, matched by a
  // rule or listed in an index (its weight_map key would be "" too): refuse the file.
  if (name.empty()) throw_bad_input("safetensors.empty_name", "a tensor has an empty name", file);
  if (!entry.is_object())
    throw_bad_input("safetensors.tensor_entry_invalid", "entry is not a JSON object", file, name);
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!entry.contains(key))
      throw_bad_input("safetensors.tensor_entry_invalid", fmt::format("missing \"{}\"", key), file,
                      name);

  const Json& dtype_value = entry["dtype"];
  if (!dtype_value.is_string())
    throw_bad_input("safetensors.tensor_entry_invalid", "\"dtype\" is not a string", file, name);
  auto dtype = parse_dtype(dtype_value.get_ref<const std::string&>());
  if (!dtype)
    throw_bad_input("safetensors.unknown_dtype",
                    fmt::format("unknown dtype \"{}\"", dtype_value.get<std::string>()), file,
                    name);

  const Json& shape_value = entry["shape"];
  if (!shape_value.is_array())
    throw_bad_input("safetensors.tensor_entry_invalid", "\"shape\" is not an array", file, name);
  TensorInfo info{name, *dtype, {}, 0, 0};
  info.shape.reserve(shape_value.size());
  for (const auto& dimension : shape_value)
    info.shape.push_back(unsigned_integer(dimension, "shape entries", file, name));

  const Json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2)
    throw_bad_input("safetensors.tensor_entry_invalid",
                    "\"data_offsets\" is not a [begin, end] pair", file, name);
  info.begin = unsigned_integer(offsets[0], "data_offsets", file, name);
  info.end = unsigned_integer(offsets[1], "data_offsets", file, name);
  if (info.end < info.begin)
    throw_bad_input("safetensors.offsets_reversed",
                    fmt::format("data_offsets end {} is before begin {}", info.end, info.begin),
                    file, name);

  bool overflow = false;
  std::uint64_t elements = 1;
  for (auto dimension : info.shape) elements = checked_multiply(elements, dimension, overflow);
  std::uint64_t bits = checked_multiply(elements, dtype_bits(*dtype), overflow);
  if (overflow)
    throw_bad_input(
        "safetensors.size_overflow",
        fmt::format("shape {} overflows a 64-bit byte count", shape_to_string(info.shape)), file,
        name);
  if (bits % 8 != 0)
    throw_bad_input("safetensors.sub_byte_misaligned",
                    fmt::format("{} elements of {} do not end on a byte boundary", elements,
                                dtype_name(*dtype)),
                    file, name);
  if (bits / 8 != info.byte_size())
    throw_bad_input(
        "safetensors.size_mismatch",
        fmt::format("shape {} of {} needs {} bytes but data_offsets span {}",
                    shape_to_string(info.shape), dtype_name(*dtype), bits / 8, info.byte_size()),
        file, name);
  return info;
}

StringMap parse_metadata(const Json& value, const std::string& file) {
  StringMap metadata;
  if (value.is_null()) return metadata;
  if (!value.is_object())
    throw_bad_input("safetensors.metadata_invalid", "\"__metadata__\" is not an object", file);
  for (const auto& [key, entry] : value.items()) {
    if (!entry.is_string())
      throw_bad_input("safetensors.metadata_invalid",
                      fmt::format("\"__metadata__\" value for \"{}\" is not a string", key), file);
    metadata.emplace_back(key, entry.get<std::string>());
  }
  return metadata;
}

// Sorted by offset, tensors must tile [0, data_size) exactly.
void check_tiling(std::vector<TensorInfo>& tensors, const std::string& file) {
  std::stable_sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  std::uint64_t expected_begin = 0;
  for (const auto& tensor : tensors) {
    if (tensor.begin > expected_begin)
      throw_bad_input("safetensors.offset_gap",
                      fmt::format("data starts at {} but the previous tensor ends at {} (gap)",
                                  tensor.begin, expected_begin),
                      file, tensor.name);
    if (tensor.begin < expected_begin)
      throw_bad_input("safetensors.offset_overlap",
                      fmt::format("data starts at {} inside the previous tensor, which ends at {}",
                                  tensor.begin, expected_begin),
                      file, tensor.name);
    expected_begin = tensor.end;
  }
}

// The 8-byte little-endian length that opens every safetensors file.
std::uint64_t decode_header_length(const std::byte* eight_bytes) {
  std::uint64_t length = 0;
  for (int i = 7; i >= 0; --i)
    length = (length << 8) | std::to_integer<std::uint64_t>(eight_bytes[i]);
  return length;
}

}  // namespace

std::uint64_t element_count(const Shape& shape) {
  bool overflow = false;
  std::uint64_t elements = 1;
  for (auto dimension : shape) elements = checked_multiply(elements, dimension, overflow);
  if (overflow)
    throw_bad_input("safetensors.size_overflow",
                    "shape " + shape_to_string(shape) + " overflows 64 bits");
  return elements;
}

std::string shape_to_string(const Shape& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

const TensorInfo* SafetensorsHeader::find(std::string_view name) const {
  for (const auto& tensor : tensors)
    if (tensor.name == name) return &tensor;
  return nullptr;
}

SafetensorsHeader parse_safetensors_header(std::span<const std::byte> file_start,
                                           std::uint64_t file_size, const std::string& file_label) {
  if (file_size < 8 || file_start.size() < 8)
    throw_bad_input("safetensors.header_too_small",
                    fmt::format("{} bytes is too short for the 8-byte header length", file_size),
                    file_label);
  std::uint64_t header_length = decode_header_length(file_start.data());
  if (header_length > kMaxSafetensorsHeaderBytes)
    throw_bad_input("safetensors.header_too_large",
                    fmt::format("header length {} exceeds the {} byte limit", header_length,
                                kMaxSafetensorsHeaderBytes),
                    file_label);
  if (8 + header_length > file_size || 8 + header_length > file_start.size())
    throw_bad_input("safetensors.header_beyond_file",
                    fmt::format("header length {} runs past the end of the {}-byte file",
                                header_length, file_size),
                    file_label);

  std::string_view text(reinterpret_cast<const char*>(file_start.data()) + 8, header_length);
  Json root = parse_rejecting_duplicates(text, file_label);
  if (!root.is_object())
    throw_bad_input("safetensors.header_not_object", "header JSON is not an object", file_label);

  SafetensorsHeader header;
  header.header_length = header_length;
  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__")
      header.metadata = parse_metadata(entry, file_label);
    else
      header.tensors.push_back(parse_tensor_entry(name, entry, file_label));
  }
  check_tiling(header.tensors, file_label);

  std::uint64_t expected_size = header.data_start() + header.data_size();
  if (expected_size > file_size)
    throw_bad_input("safetensors.data_out_of_bounds",
                    fmt::format("tensor data ends at byte {} but the file has {} (truncated?)",
                                expected_size, file_size),
                    file_label, header.tensors.back().name);
  if (expected_size < file_size)
    throw_bad_input("safetensors.trailing_bytes",
                    fmt::format("{} bytes after the last tensor are not described by the header",
                                file_size - expected_size),
                    file_label);
  return header;
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : file_(path) {
  std::byte length_bytes[8] = {};
  std::uint64_t prefix = std::min<std::uint64_t>(8, file_.size());
  file_.read_at(0, std::span(length_bytes, prefix));
  std::uint64_t header_length = prefix < 8 ? 0 : decode_header_length(length_bytes);
  // Read no more than the file holds; parse_safetensors_header reports what is wrong.
  std::uint64_t wanted =
      prefix < 8 ? prefix
                 : std::min<std::uint64_t>(file_.size(),
                                           8 + std::min(header_length, kMaxSafetensorsHeaderBytes));
  std::vector<std::byte> start(wanted);
  file_.read_at(0, start);
  header_ = parse_safetensors_header(start, file_.size(), path.string());
}

void SafetensorsFile::read(const TensorInfo& tensor, std::span<std::byte> out) const {
  if (out.size() != tensor.byte_size())
    throw Error(
        ErrorClass::Internal, "safetensors.read_size",
        fmt::format("buffer of {} bytes for a {}-byte tensor", out.size(), tensor.byte_size()),
        path().string(), tensor.name);
  file_.read_at(header_.data_start() + tensor.begin, out);
}

std::vector<std::byte> SafetensorsFile::read(const TensorInfo& tensor) const {
  std::vector<std::byte> bytes(tensor.byte_size());
  read(tensor, bytes);
  return bytes;
}

void SafetensorsFile::read_part(const TensorInfo& tensor, std::uint64_t offset_in_tensor,
                                std::span<std::byte> out) const {
  if (offset_in_tensor + out.size() > tensor.byte_size())
    throw Error(ErrorClass::Internal, "safetensors.read_range",
                fmt::format("range [{}, {}) outside the {}-byte tensor", offset_in_tensor,
                            offset_in_tensor + out.size(), tensor.byte_size()),
                path().string(), tensor.name);
  file_.read_at(header_.data_start() + tensor.begin + offset_in_tensor, out);
}

}  // namespace qs
