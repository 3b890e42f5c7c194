#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/safetensors.h"

namespace qs {

std::uint64_t TensorSpec::byte_size() const {
  std::uint64_t elements = element_count(shape);
  std::uint64_t bits = 0;
  if (__builtin_mul_overflow(elements, dtype_bits(dtype), &bits))
    throw_bad_input("safetensors.size_overflow",
                    "shape " + shape_to_string(shape) + " overflows a 64-bit byte count", {}, name);
  if (bits % 8 != 0)
    throw_bad_input(
        "safetensors.sub_byte_misaligned",
        fmt::format("{} elements of {} do not end on a byte boundary", elements, dtype_name(dtype)),
        {}, name);
  return bits / 8;
}

std::string build_safetensors_header(const std::vector<TensorSpec>& tensors,
                                     const StringMap& metadata) {
  nlohmann::ordered_json root = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& entries = root["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) entries[key] = value;
  }
  std::uint64_t offset = 0;
  for (const auto& tensor : tensors) {
    if (tensor.name == "__metadata__" || root.contains(tensor.name))
      throw_bad_input("safetensors.duplicate_name", "name given twice to the writer", {},
                      tensor.name);
    std::uint64_t end = offset + tensor.byte_size();
    auto& entry = root[tensor.name];
    entry["dtype"] = dtype_name(tensor.dtype);
    entry["shape"] = tensor.shape;
    entry["data_offsets"] = {offset, end};
    offset = end;
  }
  std::string json = root.dump();
  // Pad with spaces so the data section, and with it every tensor, starts 8-byte aligned.
  json.append((8 - json.size() % 8) % 8, ' ');
  if (json.size() > kMaxSafetensorsHeaderBytes)
    throw_bad_input("safetensors.header_too_large",
                    fmt::format("header of {} bytes exceeds the {} byte limit; use more shards",
                                json.size(), kMaxSafetensorsHeaderBytes));
  std::string bytes(8, '\0');
  std::uint64_t length = json.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((length >> (8 * i)) & 0xFF);
  return bytes + json;
}

SafetensorsWriter::SafetensorsWriter(std::filesystem::path destination,
                                     std::vector<TensorSpec> tensors, StringMap metadata)
    : out_(std::move(destination)), tensors_(std::move(tensors)) {
  std::string header = build_safetensors_header(tensors_, metadata);
  header_bytes_ = header.size();
  std::uint64_t offset = 0;
  for (const auto& tensor : tensors_) tensor_ends_.push_back(offset += tensor.byte_size());
  data_bytes_ = offset;
  out_.write(header);
  // Zero-byte tensors at the start are complete before any write.
  while (current_ < tensors_.size() && tensor_ends_[current_] == 0) ++current_;
}

void SafetensorsWriter::write(std::span<const std::byte> bytes) {
  if (data_written_ + bytes.size() > data_bytes_)
    throw Error(ErrorClass::Internal, "safetensors.write_overrun",
                fmt::format("{} bytes more than the header declares",
                            data_written_ + bytes.size() - data_bytes_),
                out_.destination().string());
  out_.write(bytes);
  data_written_ += bytes.size();
  while (current_ < tensors_.size() && tensor_ends_[current_] <= data_written_) ++current_;
}

void SafetensorsWriter::write_tensor(std::string_view name, std::span<const std::byte> bytes) {
  // Empty tensors are complete before they are written; accept them where they stand.
  if (bytes.empty())
    for (std::size_t i = 0; i < tensors_.size(); ++i)
      if (tensors_[i].name == name && tensor_ends_[i] == data_written_ &&
          tensors_[i].byte_size() == 0)
        return;
  if (current_ >= tensors_.size() || tensors_[current_].name != name)
    throw Error(ErrorClass::Internal, "safetensors.write_order",
                fmt::format("written out of order (expected '{}')", next_tensor()),
                out_.destination().string(), std::string(name));
  std::uint64_t begin = current_ == 0 ? 0 : tensor_ends_[current_ - 1];
  if (data_written_ != begin || bytes.size() != tensor_ends_[current_] - begin)
    throw Error(ErrorClass::Internal, "safetensors.write_size",
                fmt::format("{} bytes given for a {}-byte tensor", bytes.size(),
                            tensor_ends_[current_] - begin),
                out_.destination().string(), std::string(name));
  write(bytes);
}

std::string_view SafetensorsWriter::next_tensor() const {
  return current_ < tensors_.size() ? std::string_view(tensors_[current_].name)
                                    : std::string_view();
}

void SafetensorsWriter::commit() {
  if (data_written_ != data_bytes_)
    throw Error(ErrorClass::Internal, "safetensors.write_incomplete",
                fmt::format("only {} of {} data bytes written", data_written_, data_bytes_),
                out_.destination().string(), std::string(next_tensor()));
  out_.commit();
}

}  // namespace qs
