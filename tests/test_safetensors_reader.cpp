#include <gtest/gtest.h>

#include <set>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/safetensors.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::broken_file_cases;
using testing::BrokenFileCase;
using testing::ScratchDirectory;
using testing::valid_raw_file;

TEST(SafetensorsReader, ReadsValidFile) {
  ScratchDirectory scratch("reader");
  auto path = scratch.path() / "ok.safetensors";
  valid_raw_file().write_to(path);
  SafetensorsFile file(path);
  ASSERT_EQ(file.tensors().size(), 2u);
  EXPECT_EQ(file.tensors()[0].name, "a");
  EXPECT_EQ(file.tensors()[0].dtype, DType::F32);
  EXPECT_EQ(file.tensors()[1].shape, (Shape{2, 2}));
  ASSERT_EQ(file.header().metadata.size(), 1u);
  EXPECT_EQ(file.header().metadata[0].first, "format");
  auto bytes = file.read(file.tensors()[1]);
  EXPECT_EQ(bytes.size(), 8u);
  EXPECT_EQ(bytes[0], std::byte{1});
}

TEST(SafetensorsReader, AcceptsWhitespaceAroundHeaderLikeTheReference) {
  ScratchDirectory scratch("reader");
  auto raw = valid_raw_file();
  raw.header_json = "  \n" + raw.header_json + "    ";
  raw.write_to(scratch.path() / "padded.safetensors");
  EXPECT_NO_THROW(SafetensorsFile(scratch.path() / "padded.safetensors"));
}

TEST(SafetensorsReader, AcceptsEmptyAndScalarTensors) {
  ScratchDirectory scratch("reader");
  testing::RawSafetensors raw;
  raw.header_json = R"({"empty":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},)"
                    R"("scalar":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})";
  raw.data = std::string(4, '\0');
  raw.write_to(scratch.path() / "x.safetensors");
  SafetensorsFile file(scratch.path() / "x.safetensors");
  EXPECT_EQ(file.header().find("empty")->byte_size(), 0u);
  EXPECT_EQ(file.header().find("scalar")->element_count(), 1u);
}

TEST(SafetensorsReader, AcceptsHeaderWithNoTensors) {
  ScratchDirectory scratch("reader");
  testing::RawSafetensors raw;
  raw.header_json = R"({"__metadata__":{"format":"pt"}})";
  raw.write_to(scratch.path() / "x.safetensors");
  EXPECT_TRUE(SafetensorsFile(scratch.path() / "x.safetensors").tensors().empty());
}

TEST(SafetensorsReader, ReportsTensorsInOffsetOrderWhateverTheJsonOrder) {
  ScratchDirectory scratch("reader");
  auto raw = valid_raw_file();
  raw.header_json = R"({"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[8,16]},)"
                    R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  raw.write_to(scratch.path() / "x.safetensors");
  SafetensorsFile file(scratch.path() / "x.safetensors");
  EXPECT_EQ(file.tensors()[0].name, "a");
}

class BrokenFile : public ::testing::TestWithParam<BrokenFileCase> {};

TEST_P(BrokenFile, IsRejectedWithItsOwnKind) {
  ScratchDirectory scratch("broken");
  auto path = scratch.path() / "broken.safetensors";
  GetParam().file.write_to(path);
  try {
    SafetensorsFile file(path);
    FAIL() << "accepted a broken file";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), GetParam().expected_kind) << error.what();
    EXPECT_EQ(error.error_class(), ErrorClass::BadInput);
    EXPECT_NE(std::string(error.what()).find(path.string()), std::string::npos)
        << "message must name the file: " << error.what();
    EXPECT_EQ(std::string(error.what()).find('\n'), std::string::npos) << "one line";
  }
}

TEST_P(BrokenFile, PureParserAgreesWithFileReader) {
  auto bytes = GetParam().file.bytes();
  auto span = std::as_bytes(std::span(bytes.data(), bytes.size()));
  try {
    parse_safetensors_header(span, bytes.size(), "memory");
    FAIL() << "accepted a broken file";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), GetParam().expected_kind);
  }
}

INSTANTIATE_TEST_SUITE_P(EveryFailureClass, BrokenFile, ::testing::ValuesIn(broken_file_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(SafetensorsReader, TensorNamedInErrorsWhereOneIsAtFault) {
  for (const auto& broken : broken_file_cases()) {
    if (broken.expected_kind != "safetensors.size_mismatch") continue;
    auto bytes = broken.file.bytes();
    try {
      parse_safetensors_header(std::as_bytes(std::span(bytes.data(), bytes.size())), bytes.size(),
                               "f");
    } catch (const Error& error) {
      EXPECT_EQ(error.tensor(), "b");
      EXPECT_NE(std::string(error.what()).find("tensor 'b'"), std::string::npos);
    }
  }
}

TEST(SafetensorsReader, EveryFailureClassHasADistinctMessage) {
  std::set<std::string> details;
  for (const auto& broken : broken_file_cases()) {
    auto bytes = broken.file.bytes();
    try {
      parse_safetensors_header(std::as_bytes(std::span(bytes.data(), bytes.size())), bytes.size(),
                               "f");
    } catch (const Error& error) {
      details.insert(error.kind() + ": " + error.detail());
    }
  }
  EXPECT_EQ(details.size(), broken_file_cases().size());
}

TEST(SafetensorsReader, MissingFileIsBadInput) {
  try {
    SafetensorsFile file("/nonexistent/model.safetensors");
    FAIL();
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), "file.open");
    EXPECT_EQ(error.error_class(), ErrorClass::BadInput);
  }
}

}  // namespace
}  // namespace qs
