# Entry points a fresh Debian machine can run: `make demo` and `make test` install what they
# need (scripts/setup.sh), build, and run.

BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all setup configure build test demo fuzz bench conformance gpu-check slurm-test clean

all: build

setup:
	@scripts/setup.sh

configure: setup
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

demo: build
	@scripts/demo.sh $(BUILD_DIR)/tools/quantsmith

fuzz: setup
	@scripts/fuzz.sh

bench: build
	@bench/read_checksum.sh $(BUILD_DIR)/tools/quantsmith
	@$(BUILD_DIR)/bench/qs_bench_fp4 256
	@bench/scale_methods.sh $(BUILD_DIR)/tools/quantsmith
	@bench/quantize_e2e.sh $(BUILD_DIR)/tools/quantsmith

conformance: build
	@scripts/conformance.sh $(BUILD_DIR)/tools/quantsmith

# On a machine with a GPU: CUDA build, CUDA tests, GPU benchmarks, one report
# (docs/multi-device.md). No `setup` first: a lent GPU machine may have no network, and the
# script names any build tool it lacks.
gpu-check:
	@scripts/gpu_check.sh

# Partitioned jobs on a real Slurm: a one-node cluster on localhost (installs slurm-wlm and
# munge when missing), the seed recipes as job arrays, a killed and a requeued task.
slurm-test: build
	@scripts/slurm/slurm_test.sh $(BUILD_DIR)/tools/quantsmith

clean:
	rm -rf $(BUILD_DIR)
