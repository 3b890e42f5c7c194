#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/io/safetensors.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::ScratchDirectory;

std::string slurp(const std::filesystem::path& path) { return read_text_file(path); }

std::span<const std::byte> as_bytes(const std::string& text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

TEST(SafetensorsWriter, HeaderIsPaddedToEightBytesAndReadsBack) {
  ScratchDirectory scratch("writer");
  auto path = scratch.path() / "out.safetensors";
  std::vector<TensorSpec> specs{{"w", DType::BF16, {3}}, {"s", DType::F32, {1}}};
  SafetensorsWriter writer(path, specs);
  writer.write_tensor("w", as_bytes(std::string(6, 'a')));
  writer.write_tensor("s", as_bytes(std::string(4, 'b')));
  writer.commit();

  auto bytes = slurp(path);
  std::uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i)
    header_length = (header_length << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(header_length % 8, 0u);
  SafetensorsFile file(path);
  EXPECT_EQ(file.tensors()[0].name, "w");
  EXPECT_EQ(file.tensors()[1].begin, 6u);
}

TEST(SafetensorsWriter, SameInputSameBytes) {
  ScratchDirectory scratch("writer");
  std::vector<TensorSpec> specs{{"x", DType::U8, {5}}, {"y", DType::I32, {2}}};
  for (const char* name : {"one.safetensors", "two.safetensors"}) {
    SafetensorsWriter writer(scratch.path() / name, specs, {{"format", "pt"}, {"k", "v"}});
    writer.write(as_bytes("abcde"));
    writer.write(as_bytes("12345678"));
    writer.commit();
  }
  EXPECT_EQ(slurp(scratch.path() / "one.safetensors"), slurp(scratch.path() / "two.safetensors"));
}

TEST(SafetensorsWriter, NothingVisibleUntilCommitAndNoLeftoversWhenDropped) {
  ScratchDirectory scratch("writer");
  auto path = scratch.path() / "out.safetensors";
  {
    SafetensorsWriter writer(path, {{"x", DType::U8, {4}}});
    writer.write(as_bytes("ab"));
    EXPECT_FALSE(std::filesystem::exists(path));
  }
  EXPECT_TRUE(std::filesystem::is_empty(scratch.path()));
}

TEST(SafetensorsWriter, RefusesIncompleteCommitAndOverrun) {
  ScratchDirectory scratch("writer");
  SafetensorsWriter writer(scratch.path() / "x.safetensors", {{"x", DType::U8, {4}}});
  writer.write(as_bytes("ab"));
  EXPECT_THROW(writer.commit(), Error);
  EXPECT_THROW(writer.write(as_bytes("abc")), Error);
}

TEST(SafetensorsWriter, RefusesOutOfOrderTensor) {
  ScratchDirectory scratch("writer");
  SafetensorsWriter writer(scratch.path() / "x.safetensors",
                           {{"x", DType::U8, {1}}, {"y", DType::U8, {1}}});
  EXPECT_THROW(writer.write_tensor("y", as_bytes("a")), Error);
}

TEST(SafetensorsWriter, RefusesDuplicateNames) {
  EXPECT_THROW(build_safetensors_header({{"x", DType::U8, {1}}, {"x", DType::U8, {1}}}, {}), Error);
}

TEST(SafetensorsWriter, FixtureShardsRoundTripByteIdentically) {
  ScratchDirectory scratch("writer");
  std::filesystem::path fixture = QS_TEST_DATA_DIR "/glm5-tiny";
  for (const char* name : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "reference.safetensors", "tokens.safetensors"}) {
    SafetensorsFile in(fixture / name);
    std::vector<TensorSpec> specs;
    for (const auto& tensor : in.tensors())
      specs.push_back({tensor.name, tensor.dtype, tensor.shape});
    SafetensorsWriter writer(scratch.path() / name, specs, in.header().metadata);
    for (const auto& tensor : in.tensors()) writer.write_tensor(tensor.name, in.read(tensor));
    writer.commit();
    EXPECT_EQ(slurp(fixture / name), slurp(scratch.path() / name)) << name;
  }
}

}  // namespace
}  // namespace qs
