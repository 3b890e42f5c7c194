// Batch forms of the scalar codecs in codecs.h. Each element is converted on its own, so
// splitting the work over threads cannot change a single output bit.

#include "qs/ckpt/core/codecs.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>

#include "qs/ckpt/core/error.h"

namespace qs {
namespace {

// safetensors stores elements little-endian; reading them with memcpy assumes the host agrees.
static_assert(std::endian::native == std::endian::little,
              "codecs read little-endian tensor bytes with memcpy");

// Below this many elements threading costs more than it saves.
constexpr std::size_t kElementsPerTask = std::size_t{1} << 16;

template <typename BlockBody>
void for_each_block(std::size_t count, BlockBody body) {
  if (count <= kElementsPerTask) {
    body(std::size_t{0}, count);
    return;
  }
  tbb::parallel_for(
      tbb::blocked_range<std::size_t>(0, count, kElementsPerTask),
      [&](const tbb::blocked_range<std::size_t>& range) { body(range.begin(), range.end()); });
}

[[noreturn]] void throw_size_mismatch(const char* what, std::size_t in_size, std::size_t out_size) {
  throw Error(ErrorClass::Internal, "codecs.size_mismatch",
              std::string(what) + ": input holds " + std::to_string(in_size) +
                  " units but output holds " + std::to_string(out_size));
}

// out[i] = convert(in[i]) over equal-length spans.
template <typename In, typename Out, typename Convert>
void convert_each(const char* what, std::span<const In> in, std::span<Out> out, Convert convert) {
  if (in.size() != out.size()) throw_size_mismatch(what, in.size(), out.size());
  const In* source = in.data();
  Out* destination = out.data();
  for_each_block(in.size(), [=](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) destination[i] = convert(source[i]);
  });
}

std::size_t packed_e2m1_bytes(std::size_t elements) { return elements / 2 + elements % 2; }

// Reads element i of type Stored from possibly unaligned little-endian bytes and decodes it.
template <typename Stored, typename Decode>
void decode_stored(const char* what, std::span<const std::byte> bytes, std::span<float> out,
                   Decode decode) {
  if (bytes.size() != out.size() * sizeof(Stored))
    throw_size_mismatch(what, bytes.size(), out.size() * sizeof(Stored));
  const std::byte* source = bytes.data();
  float* destination = out.data();
  for_each_block(out.size(), [=](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) {
      Stored element;
      std::memcpy(&element, source + i * sizeof(Stored), sizeof(Stored));
      destination[i] = decode(element);
    }
  });
}

// IEEE round-to-nearest narrowing, spelled out because a C++ double → float conversion of a
// finite value beyond FLT_MAX is undefined behaviour.
float f64_to_f32_nearest(double value) {
  // FLT_MAX + half its ulp = 2^128 - 2^103; from there on the tie-to-even neighbour is 2^128.
  const double overflow_threshold = std::ldexp(1.0, 128) - std::ldexp(1.0, 103);
  if (std::isfinite(value) && std::fabs(value) > static_cast<double>(FLT_MAX)) {
    const float magnitude = std::fabs(value) >= overflow_threshold ? INFINITY : FLT_MAX;
    return std::signbit(value) ? -magnitude : magnitude;
  }
  return static_cast<float>(value);
}

void decode_e2m1_packed(std::span<const std::uint8_t> packed, std::span<float> out) {
  if (packed.size() != packed_e2m1_bytes(out.size()))
    throw_size_mismatch("e2m1 packed → f32 (bytes vs (elements + 1) / 2)", packed.size(),
                        packed_e2m1_bytes(out.size()));
  const std::uint8_t* source = packed.data();
  float* destination = out.data();
  const std::size_t pairs = out.size() / 2;
  for_each_block(pairs, [=](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) {
      destination[2 * i] = e2m1_to_f32(unpack_e2m1_even(source[i]));
      destination[2 * i + 1] = e2m1_to_f32(unpack_e2m1_odd(source[i]));
    }
  });
  if (out.size() % 2 != 0)
    destination[out.size() - 1] = e2m1_to_f32(unpack_e2m1_even(source[pairs]));
}

}  // namespace

void convert_bf16_to_f32(std::span<const std::uint16_t> in, std::span<float> out) {
  convert_each("bf16 → f32", in, out, [](std::uint16_t code) { return bf16_to_f32(code); });
}

void convert_f16_to_f32(std::span<const std::uint16_t> in, std::span<float> out) {
  convert_each("f16 → f32", in, out, [](std::uint16_t code) { return f16_to_f32(code); });
}

void convert_e4m3_to_f32(std::span<const std::uint8_t> in, std::span<float> out) {
  convert_each("e4m3 → f32", in, out, [](std::uint8_t code) { return e4m3_to_f32(code); });
}

void convert_e5m2_to_f32(std::span<const std::uint8_t> in, std::span<float> out) {
  convert_each("e5m2 → f32", in, out, [](std::uint8_t code) { return e5m2_to_f32(code); });
}

void convert_e2m1_packed_to_f32(std::span<const std::uint8_t> packed, std::span<float> out) {
  decode_e2m1_packed(packed, out);
}

void convert_f32_to_bf16(std::span<const float> in, std::span<std::uint16_t> out) {
  convert_each("f32 → bf16", in, out, [](float value) { return f32_to_bf16(value); });
}

void convert_f32_to_f16(std::span<const float> in, std::span<std::uint16_t> out) {
  convert_each("f32 → f16", in, out, [](float value) { return f32_to_f16(value); });
}

void convert_f32_to_e4m3_satfinite(std::span<const float> in, std::span<std::uint8_t> out) {
  convert_each("f32 → e4m3", in, out, [](float value) { return f32_to_e4m3_satfinite(value); });
}

void convert_f32_to_e5m2_satfinite(std::span<const float> in, std::span<std::uint8_t> out) {
  convert_each("f32 → e5m2", in, out, [](float value) { return f32_to_e5m2_satfinite(value); });
}

void convert_f32_to_e2m1_packed(std::span<const float> in, std::span<std::uint8_t> packed) {
  if (packed.size() != packed_e2m1_bytes(in.size()))
    throw_size_mismatch("f32 → e2m1 packed (elements vs bytes)", packed_e2m1_bytes(in.size()),
                        packed.size());
  const float* source = in.data();
  std::uint8_t* destination = packed.data();
  const std::size_t pairs = in.size() / 2;
  for_each_block(pairs, [=](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i)
      destination[i] = pack_e2m1_pair(f32_to_e2m1(source[2 * i]), f32_to_e2m1(source[2 * i + 1]));
  });
  // An odd tail leaves the high nibble zero, as the packers we match pad with +0.
  if (in.size() % 2 != 0)
    destination[pairs] = pack_e2m1_pair(f32_to_e2m1(source[in.size() - 1]), 0);
}

void encode_from_f32(DType dtype, std::span<const float> values, std::span<std::byte> bytes) {
  const std::uint32_t width = dtype == DType::F32 ? 4 : 2;
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16)
    throw Error(ErrorClass::Internal, "codecs.encode_dtype",
                std::string("cannot encode f32 values as ") + std::string(dtype_name(dtype)));
  if (bytes.size() != values.size() * width)
    throw_size_mismatch("f32 → stored", bytes.size(), values.size() * width);
  if (dtype == DType::F32) {
    std::memcpy(bytes.data(), values.data(), bytes.size());
    return;
  }
  std::span<std::uint16_t> codes(reinterpret_cast<std::uint16_t*>(bytes.data()), values.size());
  if (dtype == DType::BF16)
    convert_f32_to_bf16(values, codes);
  else
    convert_f32_to_f16(values, codes);
}

void decode_to_f32(DType dtype, std::span<const std::byte> bytes, std::span<float> out) {
  const auto as_value = [](auto element) { return static_cast<float>(element); };
  switch (dtype) {
    case DType::BF16:
      return decode_stored<std::uint16_t>("BF16 → f32", bytes, out,
                                          [](std::uint16_t code) { return bf16_to_f32(code); });
    case DType::F16:
      return decode_stored<std::uint16_t>("F16 → f32", bytes, out,
                                          [](std::uint16_t code) { return f16_to_f32(code); });
    case DType::F32:
      return decode_stored<float>("F32 → f32", bytes, out, [](float value) { return value; });
    case DType::F64:
      return decode_stored<double>("F64 → f32", bytes, out, f64_to_f32_nearest);
    case DType::F8_E4M3:
      return decode_stored<std::uint8_t>("F8_E4M3 → f32", bytes, out,
                                         [](std::uint8_t code) { return e4m3_to_f32(code); });
    case DType::F8_E5M2:
      return decode_stored<std::uint8_t>("F8_E5M2 → f32", bytes, out,
                                         [](std::uint8_t code) { return e5m2_to_f32(code); });
    case DType::F8_E8M0:
      return decode_stored<std::uint8_t>("F8_E8M0 → f32", bytes, out,
                                         [](std::uint8_t code) { return e8m0_to_f32(code); });
    case DType::F4:
      return decode_e2m1_packed(
          std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                        bytes.size()),
          out);
    case DType::BOOL:
      return decode_stored<std::uint8_t>("BOOL → f32", bytes, out,
                                         [](std::uint8_t byte) { return byte != 0 ? 1.0f : 0.0f; });
    case DType::U8:
      return decode_stored<std::uint8_t>("U8 → f32", bytes, out, as_value);
    case DType::I8:
      return decode_stored<std::int8_t>("I8 → f32", bytes, out, as_value);
    case DType::U16:
      return decode_stored<std::uint16_t>("U16 → f32", bytes, out, as_value);
    case DType::I16:
      return decode_stored<std::int16_t>("I16 → f32", bytes, out, as_value);
    case DType::U32:
      return decode_stored<std::uint32_t>("U32 → f32", bytes, out, as_value);
    case DType::I32:
      return decode_stored<std::int32_t>("I32 → f32", bytes, out, as_value);
    case DType::U64:
      return decode_stored<std::uint64_t>("U64 → f32", bytes, out, as_value);
    case DType::I64:
      return decode_stored<std::int64_t>("I64 → f32", bytes, out, as_value);
    case DType::F6_E2M3:
    case DType::F6_E3M2:
      break;
  }
  throw Error(ErrorClass::BadInput, "codecs.unsupported_dtype",
              "cannot decode " + std::string(dtype_name(dtype)) + " elements to f32");
}

}  // namespace qs
