# Everything comes from Debian packages (scripts/setup.sh installs them).
find_package(nlohmann_json 3 REQUIRED)
find_package(CLI11 REQUIRED)
find_package(TBB REQUIRED)
find_package(fmt REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
# RE2 matches user-supplied name patterns in time linear in the name (std::regex backtracks).
pkg_check_modules(RE2 REQUIRED IMPORTED_TARGET re2)

# OpenBLAS by name: Debian's default libblas is the slow reference BLAS (DESIGN.md). Its
# LAPACK symbols (potrf, trtri) serve GPTQ.
find_library(QS_OPENBLAS openblas REQUIRED)
find_path(QS_OPENBLAS_INCLUDE cblas.h PATH_SUFFIXES openblas-pthread openblas REQUIRED)
