# User-facing verbs. Each installs what is missing, configures and builds as needed.
BUILD ?= build
JOBS ?= 2
KD := $(BUILD)/kd
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo "-G Ninja")

.PHONY: all deps configure build demo demo-merge test test-sanitize bench fuzz reproduce reproduce-classify reproduce-detect clean package package-test examples format docs

all: build

deps:
	@scripts/install-deps

# The build's optional parts, ON unless given (e.g. `make build BUILD=build-trainer KD_WITH_SERVE=OFF`
# in a new build folder); scripts/install-deps reads the same variables.
KD_OPTIONS := $(foreach o,KD_WITH_SERVE KD_WITH_GRPC KD_WITH_ONNX KD_BUILD_TESTS KD_BUILD_BENCH,$(if $($(o)),-D$(o)=$($(o))))
export KD_WITH_SERVE KD_WITH_GRPC KD_WITH_ONNX

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=Release $(KD_OPTIONS)

configure: deps $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# Teacher, student and distilled student on Fashion-MNIST, then the comparison table. Only the
# kd binary is built (not the tests and benchmarks): minutes less on a fresh clone.
demo: configure
	cmake --build $(BUILD) --target kd_cli -j $(JOBS)
	$(KD) run experiments/fmnist-demo.yaml
	$(KD) report runs/demo/teacher-s0 runs/demo/student-s0 runs/demo/distilled-s0 -o runs/demo/report.html

# The article's merge on two real datasets (seed 0): a clothes teacher, a digits teacher, one
# 20-class student from the pooled images without labels, against one trained on all labels.
demo-merge: build
	$(KD) run experiments/merge-two-datasets.yaml --seeds 0
	scripts/merge-table.sh $(KD)

test: build
	cd $(BUILD) && ctest --output-on-failure -j 1

# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer, in its own build folder.
# Leak reports are limited to kd's code (tests/sanitize.supp silences third-party libraries).
SAN_BUILD ?= build-sanitize
$(SAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(SAN_BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKD_SANITIZE=ON -DKD_BUILD_BENCH=OFF

test-sanitize: deps $(SAN_BUILD)/CMakeCache.txt
	cmake --build $(SAN_BUILD) -j $(JOBS)
	cd $(SAN_BUILD) && KD_SANITIZED=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitize.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j 1

# The .deb of the kd CLI, libraries, headers and CMake package (CPack), written into $(BUILD).
package: build
	cd $(BUILD) && cpack -G DEB

# The .deb installed with apt, examples/ built against it and run (scripts/package-test; CI runs it).
package-test: build
	scripts/package-test

# examples/ built against an install tree of kd ($(BUILD)/install), as another project would.
EXAMPLES_BUILD ?= build-examples
examples: build
	cmake --install $(BUILD) --prefix $(CURDIR)/$(BUILD)/install
	cmake -S examples -B $(EXAMPLES_BUILD) $(GENERATOR) -DCMAKE_PREFIX_PATH=$(CURDIR)/$(BUILD)/install
	cmake --build $(EXAMPLES_BUILD) -j $(JOBS)

# The API reference of the public headers (include/kd), from their /// comments, in $(BUILD)/docs/html.
docs: deps
	(cat docs/Doxyfile; echo OUTPUT_DIRECTORY=$(BUILD)/docs) | doxygen -
	@echo "API reference: $(BUILD)/docs/html/index.html"

# clang-format (.clang-format: Google, 100 columns) over every C++ file; `make test` checks it.
format:
	clang-format -i $$(git ls-files '*.cpp' '*.h' | grep -v '^compat/')

bench: build
	bench/run.sh $(KD)

# libFuzzer targets (clang, ASan + UBSan) for the parsers of outside input, FUZZ_SECONDS each,
# after replaying fuzz/regressions/; a separate build folder, since the main build uses GCC.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
$(FUZZ_BUILD)/CMakeCache.txt:
	CC=clang CXX=clang++ cmake -S fuzz -B $(FUZZ_BUILD) $(GENERATOR) -DCMAKE_BUILD_TYPE=RelWithDebInfo

fuzz: deps $(FUZZ_BUILD)/CMakeCache.txt
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# The full recipes over 3 seeds: the tables of docs/results/. fmnist-methods, its knob sweep
# fmnist-methods-tune, fmnist-patient and fmnist-pair2 reuse fmnist-teacher5's teacher; fmnist-scarce-tune
# (the knob sweep behind fmnist-scarce's settings) fmnist-scarce's teacher10 of seed 0,
# fmnist-scarce-ns its three teacher10 runs; fmnist-modes fmnist's teachers and fmnist-scarce's.
reproduce: reproduce-classify reproduce-detect

reproduce-classify: build
	$(KD) run experiments/fmnist-demo.yaml
	$(KD) run experiments/fmnist-teacher5.yaml
	$(KD) run experiments/fmnist-methods.yaml
	$(KD) run experiments/fmnist-methods-tune.yaml
	$(KD) run experiments/fmnist-patient.yaml
	$(KD) run experiments/fmnist-pair2.yaml
	$(KD) run experiments/fmnist-scarce.yaml
	$(KD) run experiments/fmnist-scarce-ns.yaml
	$(KD) run experiments/fmnist-scarce-teacher-tune.yaml
	$(KD) run experiments/fmnist-scarce-long.yaml
	$(KD) run experiments/fmnist-scarce-tune.yaml
	$(KD) run experiments/fmnist.yaml
	scripts/int8-table.sh $(KD)
	scripts/int8-table.sh $(KD) runs/scarce teacher10 student10 semi-dist
	$(KD) run experiments/fmnist-modes.yaml
	$(KD) run experiments/merge-two-datasets.yaml
	scripts/merge-table.sh $(KD)
	$(KD) run experiments/fmnist-self.yaml

# Detection: the generated dataset (seeded), then d0, d3 and d0 distilled from d3 (~1 h);
# the comparison table lands in runs/detect/compare.md.
DETECT_DATA := data/fmnist-det
$(DETECT_DATA)/train.json: | build
	$(KD) data make-detection --out $(DETECT_DATA) --images 3000 --test-images 600 --seed 0

reproduce-detect: build $(DETECT_DATA)/train.json
	$(KD) run experiments/detect.yaml
	scripts/int8-table.sh $(KD) runs/detect d3 d0 d0-distilled

clean:
	rm -rf $(BUILD) $(FUZZ_BUILD) $(SAN_BUILD)
