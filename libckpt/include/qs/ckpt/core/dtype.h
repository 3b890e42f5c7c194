#pragma once
// Element types a safetensors file may declare, with their on-disk names and widths.

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace qs {

// Declared in increasing alignment order, like the Rust reference, so that sorting by
// alignment is sorting by enum value.
enum class DType : std::uint8_t {
  BOOL,
  F4,  // E2M1, logical element count in the shape (two per byte)
  F6_E2M3,
  F6_E3M2,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  F8_E8M0,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  F64,
  I64,
  U64,
};

struct DTypeInfo {
  DType dtype;
  std::string_view name;  // as written in safetensors headers
  std::uint32_t bits;     // storage bits per element
  bool floating;
};

// All accepted dtypes; anything else in a header is rejected.
std::span<const DTypeInfo> all_dtypes();
const DTypeInfo& dtype_info(DType dtype);
std::optional<DType> parse_dtype(std::string_view name);
inline std::string_view dtype_name(DType dtype) { return dtype_info(dtype).name; }
inline std::uint32_t dtype_bits(DType dtype) { return dtype_info(dtype).bits; }

}  // namespace qs
