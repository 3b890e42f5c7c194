#include "qs/ckpt/core/dtype.h"

#include <array>

#include "qs/ckpt/core/error.h"

namespace qs {
namespace {

// Order matches the enum so dtype_info is an index.
constexpr std::array<DTypeInfo, 19> kDTypes{{
    {DType::BOOL, "BOOL", 8, false},      {DType::F4, "F4", 4, true},
    {DType::F6_E2M3, "F6_E2M3", 6, true}, {DType::F6_E3M2, "F6_E3M2", 6, true},
    {DType::U8, "U8", 8, false},          {DType::I8, "I8", 8, false},
    {DType::F8_E5M2, "F8_E5M2", 8, true}, {DType::F8_E4M3, "F8_E4M3", 8, true},
    {DType::F8_E8M0, "F8_E8M0", 8, true}, {DType::I16, "I16", 16, false},
    {DType::U16, "U16", 16, false},       {DType::F16, "F16", 16, true},
    {DType::BF16, "BF16", 16, true},      {DType::I32, "I32", 32, false},
    {DType::U32, "U32", 32, false},       {DType::F32, "F32", 32, true},
    {DType::F64, "F64", 64, true},        {DType::I64, "I64", 64, false},
    {DType::U64, "U64", 64, false},
}};

constexpr bool table_matches_enum() {
  for (std::size_t i = 0; i < kDTypes.size(); ++i)
    if (static_cast<std::size_t>(kDTypes[i].dtype) != i) return false;
  return true;
}
static_assert(table_matches_enum(), "kDTypes must follow the DType enum order");

}  // namespace

std::span<const DTypeInfo> all_dtypes() { return kDTypes; }

const DTypeInfo& dtype_info(DType dtype) {
  auto index = static_cast<std::size_t>(dtype);
  if (index >= kDTypes.size())
    throw Error(ErrorClass::Internal, "dtype.invalid", "invalid DType value");
  return kDTypes[index];
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& info : kDTypes)
    if (info.name == name) return info.dtype;
  return std::nullopt;
}

}  // namespace qs
