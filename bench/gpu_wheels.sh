#!/usr/bin/env bash
# Make .whl/, the kit bench/gpu_session.sh installs on a GPU machine that has no package registry
# (Python 3.12, torch 2.11 + CUDA 13 in its image; see the device notes). Run on a machine with
# PyPI, from the project root; .whl/ is git-ignored (add `/.whl/` to .git/info/exclude) and travels
# with the device call (`carry: [".whl"]`), about 33 MB.
#
# What is carried: the project's pins that the image lacks or holds at other versions (the
# training stack, pydantic), and what the job path imports beyond the image (the web and queue
# stack: `python -m bench.gpu_job --list-distributions` lists it), plus causal-conv1d's source
# patched to build for sm_90 (H100 / H200) only.
set -euo pipefail
DEST=.whl
PY=3.12
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)
WHEELS=(
  # training stack (pins from pyproject.toml)
  transformers==5.23.0 trl==1.16.0 peft==0.21.2 accelerate==1.15.0 datasets==5.2.0
  pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0 dill==0.4.1 multiprocess==0.70.19
  # the job path: API, worker, CLI, migrations
  fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 python-multipart==0.0.34 sse-starlette==3.7.1
  annotated-doc==0.0.7 opentelemetry-api==1.45.2 celery==5.7.0 kombu==5.7.0 amqp==5.4.2
  billiard==4.3.2 vine==5.1.0 click==8.5.1 click-didyoumean==0.3.1 click-plugins==1.1.1.2
  click-repl==0.4.1 prompt_toolkit==3.0.53 wcwidth==0.9.4 tzlocal==5.4.5 SQLAlchemy==2.1.9
  alembic==1.20.1 Mako==1.4.3 pydantic-settings==2.16.3 python-dotenv==1.2.4
  mcp==2.3.0 mcp-types==2.3.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 pyjwt==2.15.1
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  cryptography==50.0.2 cffi==2.1.1
)
KERNEL=causal_conv1d-1.6.2.post1

mkdir -p "$DEST"
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  "${platform_args[@]}" -d "$DEST" "${WHEELS[@]}"

# causal-conv1d ships only as source; its setup.py compiles for eight architectures (sm_75 ..
# sm_121). Keep only sm_90: the build drops from many minutes to about five on 8 cores.
tmp=$(mktemp -d)
# pip cannot download this sdist: it prepares its metadata, which imports torch. Take the file
# straight from PyPI's JSON simple API instead.
python3 - "$KERNEL" "$tmp" <<'EOF'
import json, sys, urllib.request
name, dest = sys.argv[1], sys.argv[2]
req = urllib.request.Request("https://pypi.org/simple/causal-conv1d/",
                             headers={"Accept": "application/vnd.pypi.simple.v1+json"})
files = json.load(urllib.request.urlopen(req))["files"]
url = next(f["url"] for f in files if f["filename"] == f"{name}.tar.gz")
urllib.request.urlretrieve(url, f"{dest}/{name}.tar.gz")
EOF
tar xzf "$tmp/$KERNEL.tar.gz" -C "$tmp"
python3 - "$tmp/$KERNEL/setup.py" <<'EOF'
import sys
path = sys.argv[1]
src = open(path).read()
start = src.index('        cc_flag.append("-gencode")\n        cc_flag.append("arch=compute_75,code=sm_75")')
end_marker = '            cc_flag.append("arch=compute_121,code=sm_121")\n'
end = src.index(end_marker) + len(end_marker)
patch = '        # edgetune: Hopper only (H100/H200), to keep the build short\n        cc_flag += ["-gencode", "arch=compute_90,code=sm_90"]\n'
open(path, "w").write(src[:start] + patch + src[end:])
EOF
rm -rf "$DEST/causal-conv1d-src" "$tmp/$KERNEL/tests" "$tmp/$KERNEL"/*.egg-info
mv "$tmp/$KERNEL" "$DEST/causal-conv1d-src"
rm -rf "$tmp"
du -sh "$DEST"
