#pragma once
// The safetensors container: a validated header model, a reader over pread, and a writer
// that produces byte-identical files for identical input.
//
// Rules enforced on read (the reference parser's, plus duplicate-name rejection):
//  - 8-byte little-endian header length N, N <= 100,000,000, 8 + N <= file size;
//  - the header is UTF-8 JSON (surrounding whitespace allowed) whose top level is an object;
//  - every key other than "__metadata__" is a tensor with "dtype" (whitelisted), "shape"
//    (non-negative integers) and "data_offsets" ([begin, end], integers); other keys ignored;
//  - "__metadata__", when present, maps strings to strings;
//  - no name appears twice (at any level of the JSON);
//  - element count × bits is computed with overflow checks, must end on a byte boundary,
//    and equals end - begin;
//  - sorted by begin, tensors tile the data section from 0 without gaps or overlaps, and the
//    last end is exactly the end of the file.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qs/ckpt/core/dtype.h"
#include "qs/ckpt/io/file_io.h"

namespace qs {

inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

using Shape = std::vector<std::uint64_t>;
// Ordered, so that metadata round-trips in file order.
using StringMap = std::vector<std::pair<std::string, std::string>>;

std::uint64_t element_count(const Shape& shape);  // throws on overflow
std::string shape_to_string(const Shape& shape);  // "[512, 256]"

struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;
  std::uint64_t begin = 0;  // offsets relative to the start of the data section
  std::uint64_t end = 0;

  std::uint64_t byte_size() const { return end - begin; }
  std::uint64_t element_count() const { return qs::element_count(shape); }
};

struct SafetensorsHeader {
  std::uint64_t header_length = 0;  // N, the JSON byte count (including padding)
  std::vector<TensorInfo> tensors;  // in data-offset order
  StringMap metadata;

  std::uint64_t data_start() const { return 8 + header_length; }
  std::uint64_t data_size() const { return tensors.empty() ? 0 : tensors.back().end; }
  // nullptr when absent. Linear: headers are small and lookups rare; Checkpoint indexes.
  const TensorInfo* find(std::string_view name) const;
};

// Validates a whole header. `file_start` holds at least the first 8 + N bytes of the file
// (or fewer, which is itself an error); `file_size` is the full size on disk; `file_label`
// names the file in errors. Pure: no I/O, safe to fuzz.
SafetensorsHeader parse_safetensors_header(std::span<const std::byte> file_start,
                                           std::uint64_t file_size, const std::string& file_label);

class SafetensorsFile {
 public:
  // Reads and validates the header; tensor data is read on demand.
  explicit SafetensorsFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_.path(); }
  const SafetensorsHeader& header() const { return header_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  std::uint64_t file_size() const { return file_.size(); }
  const ReadOnlyFile& file() const { return file_; }

  // `out` must be exactly the tensor's byte size.
  void read(const TensorInfo& tensor, std::span<std::byte> out) const;
  std::vector<std::byte> read(const TensorInfo& tensor) const;
  // A sub-range of one tensor's bytes, e.g. for streaming it in pieces.
  void read_part(const TensorInfo& tensor, std::uint64_t offset_in_tensor,
                 std::span<std::byte> out) const;

 private:
  ReadOnlyFile file_;
  SafetensorsHeader header_;
};

// What a writer is told up front about each tensor; offsets follow from the order.
struct TensorSpec {
  std::string name;
  DType dtype;
  Shape shape;

  std::uint64_t byte_size() const;  // throws on overflow or a sub-byte remainder
};

// The exact header bytes (8-byte length + compact JSON padded with spaces to a multiple of 8)
// for tensors laid out contiguously in the given order. Metadata comes first, as in files
// written by the Python library.
std::string build_safetensors_header(const std::vector<TensorSpec>& tensors,
                                     const StringMap& metadata);

// Streams one safetensors file: header first, then every tensor's bytes in the declared
// order (in one or several write calls). The file appears under its name only on commit().
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::filesystem::path destination, std::vector<TensorSpec> tensors,
                    StringMap metadata = {{"format", "pt"}});

  // The next bytes of the current tensor; may span into following tensors.
  void write(std::span<const std::byte> bytes);
  // Whole tensor; checks that `name` is the tensor due next and the size matches.
  void write_tensor(std::string_view name, std::span<const std::byte> bytes);
  // Name of the tensor the next byte belongs to ("" when all are written).
  std::string_view next_tensor() const;
  std::uint64_t total_bytes() const { return header_bytes_ + data_bytes_; }
  std::uint64_t remaining_bytes() const { return data_bytes_ - data_written_; }
  void commit();

 private:
  AtomicOutputFile out_;
  std::vector<TensorSpec> tensors_;
  std::vector<std::uint64_t> tensor_ends_;  // cumulative data offsets
  std::uint64_t header_bytes_ = 0;
  std::uint64_t data_bytes_ = 0;
  std::uint64_t data_written_ = 0;
  std::size_t current_ = 0;
};

}  // namespace qs
