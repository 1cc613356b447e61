# One command runner (../shared/docs/STYLE.md, rule 19). Targets assume the project venv at .venv (override: make PY=python).
PY ?= .venv/bin/python
PIP = $(PY) -m pip
CMAKE ?= cmake
ASAN_RUNTIME = $(shell $${CC:-cc} -print-file-name=libasan.so)

.PHONY: build build-debug test test-kernels test-ctest test-san test-tsan fuzz bench lint fmt

## build: editable install; rebuilds engine._kernels from kernels/ (re-run after C changes)
build:
	$(PIP) install --no-build-isolation --no-deps -e .

## build-debug: the same with asserts on and no optimisation
build-debug:
	$(PIP) install --no-build-isolation --no-deps -e . -C cmake.build-type=Debug

## test: the whole pytest suite
test:
	$(PY) -m pytest -q

## test-kernels: the kernel tests (Python against the oracles, and the C tests through ctest)
test-kernels: test-ctest
	$(PY) -m pytest -q tests/kernels tests/unit/test_capi_lint.py

## test-ctest: the C-only kernel tests, no interpreter involved
test-ctest:
	$(CMAKE) -S . -B build/ctest -DENGINE_BUILD_TESTS=ON
	$(CMAKE) --build build/ctest
	cd build/ctest && ctest --output-on-failure

## test-san: C tests under ASan+UBSan, then the Python kernel tests against an ASan build of the
## module (a separate venv-free build dir, so the editable install that others use stays untouched)
test-san:
	$(CMAKE) -S . -B build/san -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENGINE_BUILD_TESTS=ON \
	  -DENGINE_SANITIZE_ADDRESS=ON -DENGINE_SANITIZE_UNDEFINED=ON
	$(CMAKE) --build build/san
	cd build/san && ctest --output-on-failure
	ENGINE_KERNELS_PATH=build/san PYTHONMALLOC=malloc ASAN_OPTIONS=detect_leaks=0 \
	  LD_PRELOAD=$(ASAN_RUNTIME) $(PY) -m pytest -q -p no:cacheprovider tests/kernels

## test-tsan: the C tests (which run kernels on several threads) under ThreadSanitizer
test-tsan:
	$(CMAKE) -S . -B build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENGINE_BUILD_TESTS=ON \
	  -DENGINE_SANITIZE_THREAD=ON
	$(CMAKE) --build build/tsan
	cd build/tsan && ctest --output-on-failure

## fuzz: every fuzz harness for FUZZ_SECONDS each, the kernels against the ASan+UBSan build in build/san
## (make test-san builds it); the long run and what each harness checks: fuzz/README.md
FUZZ_SECONDS ?= 5
fuzz:
	$(PY) -m fuzz.run --seconds $(FUZZ_SECONDS)

## bench: kernel micro-benchmarks against their NumPy equivalents
bench:
	$(PY) -m bench.bench_kernels

## lint: what CI checks (.ci/run)
lint:
	$(PY) -m ruff check engine exporters bench tests fuzz

## fmt: fix what ruff and clang-format can fix
fmt:
	$(PY) -m ruff check --fix engine exporters bench tests
	$(PY) -m ruff format engine exporters bench tests
	@if command -v clang-format >/dev/null; then \
	  clang-format -i --style=file:kernels/.clang-format kernels/*.c kernels/*.h tests/kernels/*.c; \
	else echo "clang-format not installed: C files left as they are"; fi
