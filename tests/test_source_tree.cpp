// Rules about the source tree itself, checked on the checkout the tests were built from:
//  * libckpt's folders depend one way, core -> io -> model -> formats -> plan -> job ->
//    validate: a file may include its own folder and folders to its left, never one to its
//    right; libquant and librun (transforms, numerics, the runner) include no writing job;
//  * libpipeline (the layer-pipelined quantize job) sits above libckpt, libquant and librun:
//    none of them includes it (and it includes no tool);
//  * no source or document cites a section of a file outside the repository (the specs the
//    code relies on are described in docs/, in our words).
// Each rule is a function over a directory, so the tests below can also run it on a small
// tree they build, and see it fail.

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.h"

namespace qs::testing {
namespace {

namespace fs = std::filesystem;

// libckpt's folders, lowest first: a folder may include itself and those before it.
constexpr std::array<std::string_view, 7> kCkptLayers = {"core", "io",  "model",   "formats",
                                                         "plan", "job", "validate"};

// Edges that break the rule while another branch removes them; a stale entry fails. None now:
// the weight-format registry took the scheme vocabulary out of plan/recipe.h and detection
// off the quantize planner.
const std::set<std::string> kPendingEdges = {};

std::optional<std::size_t> layer_rank(std::string_view folder) {
  const auto it = std::find(kCkptLayers.begin(), kCkptLayers.end(), folder);
  if (it == kCkptLayers.end()) return std::nullopt;
  return static_cast<std::size_t>(it - kCkptLayers.begin());
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool is_cpp_source(const fs::path& path) {
  static const std::set<std::string> extensions = {".h", ".cpp", ".cu", ".cuh"};
  return extensions.contains(path.extension().string());
}

// Every `#include "qs/ckpt/FOLDER/NAME"` of a file: "FOLDER/NAME".
std::vector<std::string> ckpt_includes(const fs::path& file) {
  static const std::regex include(R"re(^\s*#\s*include\s*"qs/ckpt/([^"]+)")re");
  std::vector<std::string> found;
  std::istringstream lines(read_file(file));
  std::smatch match;
  for (std::string line; std::getline(lines, line);)
    if (std::regex_search(line, match, include)) found.push_back(match[1]);
  return found;
}

// "FILE -> FOLDER/NAME" for every edge of a libckpt file (under `root`, the repository) that
// points right or into a folder the order does not name, and for every libckpt file outside
// the named folders.
std::vector<std::string> ckpt_layer_violations(const fs::path& root) {
  std::vector<std::string> violations;
  const std::array<fs::path, 2> bases = {root / "libckpt/include/qs/ckpt", root / "libckpt/src"};
  for (const auto& base : bases) {
    if (!fs::is_directory(base)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(base)) {
      if (!entry.is_regular_file() || !is_cpp_source(entry.path())) continue;
      const auto relative = fs::relative(entry.path(), root).generic_string();
      const auto inside = fs::relative(entry.path(), base);
      const auto own = layer_rank(inside.begin()->string());
      if (!own || std::distance(inside.begin(), inside.end()) != 2) {
        violations.push_back(relative + ": not in one of libckpt's folders");
        continue;
      }
      for (const auto& included : ckpt_includes(entry.path())) {
        const auto folder = included.substr(0, included.find('/'));
        const auto rank = layer_rank(folder);
        const auto edge = relative + " -> " + included;
        if ((!rank || *rank > *own) && !kPendingEdges.contains(edge)) violations.push_back(edge);
      }
    }
  }
  std::sort(violations.begin(), violations.end());
  return violations;
}

// kPendingEdges entries that no longer occur (so the allowance is removed with the edge).
std::vector<std::string> stale_pending_edges(const fs::path& root) {
  std::vector<std::string> stale;
  for (const auto& edge : kPendingEdges) {
    const auto arrow = edge.find(" -> ");
    const auto includes = ckpt_includes(root / edge.substr(0, arrow));
    if (std::find(includes.begin(), includes.end(), edge.substr(arrow + 4)) == includes.end())
      stale.push_back(edge);
  }
  return stale;
}

// "FILE -> FOLDER/NAME" for every include of libckpt's job/ folder from libquant or librun:
// they are what the jobs run, not jobs.
std::vector<std::string> job_includes_below_tools(const fs::path& root) {
  std::vector<std::string> violations;
  for (const char* library : {"libquant", "librun"}) {
    if (!fs::is_directory(root / library)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(root / library)) {
      if (!entry.is_regular_file() || !is_cpp_source(entry.path())) continue;
      for (const auto& included : ckpt_includes(entry.path()))
        if (included.starts_with("job/"))
          violations.push_back(fs::relative(entry.path(), root).generic_string() + " -> " +
                               included);
    }
  }
  std::sort(violations.begin(), violations.end());
  return violations;
}

// "FILE -> qs/pipeline/NAME" for every include of libpipeline from the libraries it is built
// on, and "FILE -> TOOL" for every include of tools/ from libpipeline.
std::vector<std::string> pipeline_include_violations(const fs::path& root) {
  static const std::regex include(R"re(^\s*#\s*include\s*"([^"]+)")re");
  std::vector<std::string> violations;
  for (const char* library : {"libckpt", "libquant", "librun", "libpipeline"}) {
    if (!fs::is_directory(root / library)) continue;
    const bool pipeline = std::string_view(library) == "libpipeline";
    for (const auto& entry : fs::recursive_directory_iterator(root / library)) {
      if (!entry.is_regular_file() || !is_cpp_source(entry.path())) continue;
      std::istringstream lines(read_file(entry.path()));
      std::smatch match;
      for (std::string line; std::getline(lines, line);) {
        if (!std::regex_search(line, match, include)) continue;
        const std::string included = match[1];
        const bool wrong = pipeline ? fs::exists(root / "tools" / included) ||
                                          included.starts_with("tools/")
                                    : included.starts_with("qs/pipeline/");
        if (wrong)
          violations.push_back(fs::relative(entry.path(), root).generic_string() + " -> " +
                               included);
      }
    }
  }
  std::sort(violations.begin(), violations.end());
  return violations;
}

// The text files of the repository that people read: sources, build files, scripts, docs,
// recipes. Build trees, virtual environments and test data are not ours to police.
bool is_checked_text_file(const fs::path& path) {
  static const std::set<std::string> extensions = {".h",   ".cpp",  ".cu",  ".cuh",   ".md",
                                                   ".sh",  ".py",   ".txt", ".cmake", ".yaml",
                                                   ".yml", ".json", ".toml"};
  const auto name = path.filename().string();
  return extensions.contains(path.extension().string()) || name == "Makefile" ||
         name == "CMakeLists.txt";
}

// "FILE:LINE: TEXT" for every line that cites a numbered section (the section sign and a
// digit) or a path into the sibling "shared" folder: both point outside a clone.
std::vector<std::string> outside_references(const fs::path& root) {
  static const std::set<std::string> skipped = {".git", "build", "tests/data", "out"};
  // Spelled without the characters themselves, so this file does not match its own rule.
  static const std::regex outside("\xC2\xA7[ ]?[0-9]|\\.\\./shared");
  std::vector<std::string> found;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    const auto relative = fs::relative(it->path(), root).generic_string();
    const auto name = it->path().filename().string();
    if (it->is_directory() &&
        (skipped.contains(relative) || name.starts_with(".") || name.starts_with("build"))) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file() || !is_checked_text_file(it->path())) continue;
    std::istringstream lines(read_file(it->path()));
    int number = 0;
    for (std::string line; std::getline(lines, line);) {
      ++number;
      if (std::regex_search(line, outside))
        found.push_back(relative + ":" + std::to_string(number) + ": " + line);
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

// "FILE:LINE: DOC, \"TITLE\"" for every citation of a section of our docs (`docs/X.md,
// "Title"` on one line) whose document or heading does not exist.
std::vector<std::string> dangling_doc_citations(const fs::path& root) {
  static const std::regex citation(R"re((docs/[a-z0-9_/-]+\.md), "([^"]+)")re");
  std::vector<std::string> found;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    const auto relative = fs::relative(it->path(), root).generic_string();
    const auto name = it->path().filename().string();
    if (it->is_directory() && (relative == "tests/data" || name.starts_with(".") ||
                               name.starts_with("build") || name == "out")) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file() || !is_checked_text_file(it->path())) continue;
    std::istringstream lines(read_file(it->path()));
    int number = 0;
    for (std::string line; std::getline(lines, line);) {
      ++number;
      for (std::sregex_iterator match(line.begin(), line.end(), citation), end; match != end;
           ++match) {
        const auto document = root / (*match)[1].str();
        std::set<std::string> headings;
        std::istringstream text(read_file(document));
        for (std::string heading; std::getline(text, heading);)
          if (heading.starts_with("#")) headings.insert(heading.substr(heading.find(' ') + 1));
        if (!fs::is_regular_file(document) || !headings.contains((*match)[2].str()))
          found.push_back(relative + ":" + std::to_string(number) + ": " + match->str());
      }
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::string listed(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) text += "\n  " + line;
  return text;
}

void write_text(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

const fs::path kSourceRoot = QS_SOURCE_DIR;

TEST(SourceTree, LibckptIncludesPointOneWay) {
  const auto violations = ckpt_layer_violations(kSourceRoot);
  EXPECT_TRUE(violations.empty()) << "libckpt folders must depend core -> io -> model -> formats "
                                     "-> plan -> job -> validate:"
                                  << listed(violations);
  const auto stale = stale_pending_edges(kSourceRoot);
  EXPECT_TRUE(stale.empty()) << "remove these from kPendingEdges:" << listed(stale);
}

TEST(SourceTree, QuantAndRunIncludeNoJob) {
  const auto violations = job_includes_below_tools(kSourceRoot);
  EXPECT_TRUE(violations.empty()) << listed(violations);
}

TEST(SourceTree, PipelineSitsAboveTheLibraries) {
  const auto violations = pipeline_include_violations(kSourceRoot);
  EXPECT_TRUE(violations.empty()) << listed(violations);
}

TEST(SourceTree, NoReferenceOutsideTheRepository) {
  const auto found = outside_references(kSourceRoot);
  EXPECT_TRUE(found.empty()) << "cite docs/ or a public URL instead:" << listed(found);
}

TEST(SourceTree, CitedDocSectionsExist) {
  const auto found = dangling_doc_citations(kSourceRoot);
  EXPECT_TRUE(found.empty()) << "no such document or heading:" << listed(found);
}

// The checks themselves, on trees built here: each must see what it is for.
TEST(SourceTree, LayerCheckSeesAnIncludeToTheRight) {
  ScratchDirectory scratch("source-tree-layers");
  const auto root = scratch.path();
  write_text(root / "libckpt/include/qs/ckpt/core/a.h", "#include \"qs/ckpt/core/b.h\"\n");
  write_text(root / "libckpt/src/io/reader.cpp",
             "#include \"qs/ckpt/core/a.h\"\n  #  include \"qs/ckpt/job/executor.h\"\n");
  write_text(root / "libckpt/src/plan/plan.cpp", "#include \"qs/ckpt/core/codecs.h\"\n");
  write_text(root / "libckpt/src/model/name.cpp", "#include \"qs/ckpt/elsewhere/x.h\"\n");
  write_text(root / "libckpt/src/stray.cpp", "\n");
  EXPECT_EQ(ckpt_layer_violations(root),
            (std::vector<std::string>{"libckpt/src/io/reader.cpp -> job/executor.h",
                                      "libckpt/src/model/name.cpp -> elsewhere/x.h",
                                      "libckpt/src/stray.cpp: not in one of libckpt's folders"}));
  EXPECT_EQ(stale_pending_edges(root).size(), kPendingEdges.size());
}

TEST(SourceTree, JobCheckSeesQuantIncludingAJob) {
  ScratchDirectory scratch("source-tree-jobs");
  const auto root = scratch.path();
  write_text(root / "libquant/src/t.cpp", "#include \"qs/ckpt/plan/plan.h\"\n");
  write_text(root / "librun/src/r.cpp", "#include \"qs/ckpt/job/executor.h\"\n");
  EXPECT_EQ(job_includes_below_tools(root),
            (std::vector<std::string>{"librun/src/r.cpp -> job/executor.h"}));
}

TEST(SourceTree, PipelineCheckSeesALibraryIncludingIt) {
  ScratchDirectory scratch("source-tree-pipeline");
  const auto root = scratch.path();
  write_text(root / "librun/src/r.cpp", "#include \"qs/pipeline/pipelined_quantization.h\"\n");
  write_text(root / "libquant/src/q.cpp", "#include \"qs/ckpt/plan/plan.h\"\n");
  write_text(root / "tools/progress_line.h", "\n");
  write_text(root / "libpipeline/src/p.cpp",
             "#include \"qs/run/language_model.h\"\n#include \"progress_line.h\"\n");
  EXPECT_EQ(pipeline_include_violations(root),
            (std::vector<std::string>{"libpipeline/src/p.cpp -> progress_line.h",
                                      "librun/src/r.cpp -> qs/pipeline/pipelined_quantization.h"}));
}

TEST(SourceTree, ReferenceCheckSeesSectionsAndSharedPaths) {
  // Built from pieces, so this file does not match its own rule.
  const std::string section = "\xC2\xA7";
  const std::string shared = std::string("../") + "shared";
  ScratchDirectory scratch("source-tree-references");
  const auto root = scratch.path();
  write_text(root / "libckpt/src/a.cpp", "// fine\n// see spec " + section + "4.2\n");
  write_text(root / "docs/b.md", "see " + shared + "/specs/x.md\n");
  write_text(root / "docs/c.md", "a " + section + " sign alone is fine\n");
  write_text(root / "build/d.cpp", "// " + section + "1 in a build tree\n");
  write_text(root / "tests/data/e.json", "\"" + section + "1\"\n");
  EXPECT_EQ(outside_references(root),
            (std::vector<std::string>{"docs/b.md:1: see " + shared + "/specs/x.md",
                                      "libckpt/src/a.cpp:2: // see spec " + section + "4.2"}));
}

TEST(SourceTree, CitationCheckSeesAMissingHeadingOrDocument) {
  ScratchDirectory scratch("source-tree-citations");
  const auto root = scratch.path();
  write_text(root / "docs/formats/x.md", "# X\n\n## Scales\n\ntext\n");
  write_text(root / "libquant/a.h",
             "// docs/formats/x.md, \"Scales\" and docs/formats/x.md, \"Codes\"\n"
             "// docs/formats/y.md, \"Scales\"\n");
  EXPECT_EQ(dangling_doc_citations(root),
            (std::vector<std::string>{"libquant/a.h:1: docs/formats/x.md, \"Codes\"",
                                      "libquant/a.h:2: docs/formats/y.md, \"Scales\""}));
}

}  // namespace
}  // namespace qs::testing
