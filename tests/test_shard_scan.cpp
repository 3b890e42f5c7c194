#include <gtest/gtest.h>
#include <unistd.h>
#include <xxhash.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/io/shard_scan.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::ScratchDirectory;

template <typename T>
std::string raw(const std::vector<T>& values) {
  std::string bytes(values.size() * sizeof(T), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

// Tensors of odd sizes at odd offsets: blocks must keep every element whole.
std::filesystem::path write_mixed_file(const std::filesystem::path& directory) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<std::uint16_t> bf16{0x3F80, 0x7FC0, 0xFF80, 0x7F80, 0x0000, 0x8000, 0x7F81};
  std::vector<std::uint8_t> u8{0xFF, 0x7F, 0x80};
  std::vector<float> f32{1.0f, nan, -inf, 2.0f, inf};
  std::vector<std::uint8_t> e4m3{0x7F, 0xFF, 0x7E, 0x00};
  std::vector<std::uint8_t> e5m2{0x7C, 0xFC, 0x7D, 0x7B};
  auto path = directory / "mixed.safetensors";
  SafetensorsWriter writer(path, {{"bf16", DType::BF16, {7}},
                                  {"bytes", DType::U8, {3}},
                                  {"f32", DType::F32, {5}},
                                  {"e4m3", DType::F8_E4M3, {4}},
                                  {"e5m2", DType::F8_E5M2, {4}}});
  for (const auto& bytes : {raw(bf16), raw(u8), raw(f32), raw(e4m3), raw(e5m2)})
    writer.write(std::as_bytes(std::span(bytes.data(), bytes.size())));
  writer.commit();
  return path;
}

std::map<std::string, NonFiniteCount> by_name(const ShardScan& scan) {
  std::map<std::string, NonFiniteCount> out;
  for (const auto& count : scan.non_finite) out[count.tensor] = count;
  return out;
}

TEST(ShardScan, CountsNanAndInfPerDtypeWhateverTheChunking) {
  ScratchDirectory scratch("scan");
  SafetensorsFile file(write_mixed_file(scratch.path()));
  for (std::size_t block : {8u, 16u, 24u, 64u, 1u << 20}) {
    auto counts = by_name(scan_shard(file, {block, 4096}));
    SCOPED_TRACE(block);
    EXPECT_EQ(counts["bf16"].nan, 2u);  // 0x7FC0 and 0x7F81
    EXPECT_EQ(counts["bf16"].inf, 2u);  // 0xFF80 and 0x7F80
    EXPECT_EQ(counts["f32"].nan, 1u);
    EXPECT_EQ(counts["f32"].inf, 2u);
    EXPECT_EQ(counts["e4m3"].nan, 2u);  // 0x7F and 0xFF; E4M3 has no Inf
    EXPECT_EQ(counts["e4m3"].inf, 0u);
    EXPECT_EQ(counts["e5m2"].nan, 1u);  // 0x7D
    EXPECT_EQ(counts["e5m2"].inf, 2u);  // 0x7C and 0xFC
    EXPECT_EQ(counts.count("bytes"), 0u) << "integers are never non-finite";
  }
}

TEST(ShardScan, HashIsXxh3OfTheWholeFile) {
  ScratchDirectory scratch("scan");
  auto path = write_mixed_file(scratch.path());
  auto bytes = read_text_file(path);
  XXH128_hash_t expected = XXH3_128bits(bytes.data(), bytes.size());
  char hex[33];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(expected.high64),
                static_cast<unsigned long long>(expected.low64));
  SafetensorsFile file(path);
  for (std::size_t block : {8u, 40u, 1u << 20}) {
    auto scan = scan_shard(file, {block, 16});
    EXPECT_EQ(scan.xxh3_128, hex);
    EXPECT_EQ(scan.bytes, bytes.size());
  }
}

TEST(ShardScan, BundledModelIsFinite) {
  SafetensorsFile file(QS_TEST_DATA_DIR "/glm5-tiny/model-00001-of-00002.safetensors");
  std::uint64_t last_progress = 0;
  auto scan =
      scan_shard(file, {1u << 16, 1u << 20}, [&](std::uint64_t done) { last_progress = done; });
  EXPECT_TRUE(scan.non_finite.empty());
  EXPECT_EQ(last_progress, file.file_size());
}

// Another process truncating a shard while validate --checksum reads it: the shard was opened
// (header read and checked) at its full size, then shrinks before its data is scanned. The
// memory map then lies past the end of the file; touching it raised SIGBUS and killed the
// process. It must be an error naming the file.
TEST(ShardScan, FileThatShrinksAfterItsHeaderWasReadIsAnErrorNamingIt) {
  for (const std::uint64_t keep : {std::uint64_t{0}, std::uint64_t{4096}}) {
    SCOPED_TRACE(keep);
    ScratchDirectory scratch("scan");
    const auto path = scratch.path() / "shrinking.safetensors";
    const std::vector<float> values(64 * 1024, 1.0f);  // 256 KiB: many pages past `keep`
    SafetensorsWriter writer(path, {{"w", DType::F32, {values.size()}}});
    writer.write(std::as_bytes(std::span(values)));
    writer.commit();
    SafetensorsFile file(path);
    ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(keep)), 0);
    try {
      scan_shard(file, {64u << 10, 64u << 10});
      ADD_FAILURE() << "no error";
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), "file.truncated");
      EXPECT_EQ(error.error_class(), ErrorClass::BadInput);
      EXPECT_EQ(error.file(), path.string());
      EXPECT_NE(error.detail().find("shrank"), std::string::npos) << error.detail();
    }
  }
}

// The guard only catches SIGBUS raised inside it; scanning a healthy file afterwards works.
TEST(ShardScan, ScanningWorksAgainAfterACaughtTruncation) {
  ScratchDirectory scratch("scan");
  const auto path = scratch.path() / "shrinking.safetensors";
  const std::vector<float> values(64 * 1024, 1.0f);
  SafetensorsWriter writer(path, {{"w", DType::F32, {values.size()}}});
  writer.write(std::as_bytes(std::span(values)));
  writer.commit();
  {
    SafetensorsFile file(path);
    ASSERT_EQ(::truncate(path.c_str(), 0), 0);
    EXPECT_THROW(scan_shard(file), Error);
  }
  SafetensorsFile healthy(QS_TEST_DATA_DIR "/glm5-tiny/model-00001-of-00002.safetensors");
  EXPECT_TRUE(scan_shard(healthy).non_finite.empty());
}

}  // namespace
}  // namespace qs
