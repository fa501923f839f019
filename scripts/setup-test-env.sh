#!/usr/bin/env bash
# Idempotent setup of what Kiln's test suite needs on a fresh Debian machine:
#   1. a Python venv with pinned numpy / onnx / onnxruntime / ai-edge-litert / coremltools (peer runtimes, golden checks, benches)
#   2. the ONNX backend node test cases, unpacked from the onnx 1.22.0 wheel
#      (the last onnx release that ships them on disk; see shared/corpus/MANIFEST.md)
#   3. ~/.cache/kiln/env.sh exporting KILN_PYTHON and KILN_ONNX_NODE_TESTS
# A second run is fast: each step is skipped when its stamp file matches.
#
# Overrides: KILN_CACHE (default ~/.cache/kiln), KILN_VENV, KILN_ONNX_NODE_TESTS,
#            KILN_BASE_PYTHON (interpreter used to create the venv, default python3).
set -euo pipefail

CACHE="${KILN_CACHE:-$HOME/.cache/kiln}"
VENV="${KILN_VENV:-$CACHE/venv}"
NODE_DIR="${KILN_ONNX_NODE_TESTS:-$CACHE/onnx-node-tests}"
BASE_PY="${KILN_BASE_PYTHON:-python3}"
ONNX_TESTS_VERSION=1.22.0 # last onnx wheel with onnx/backend/test/data/node on disk
MIN_NODE_TESTS=1700       # 1.22.0 has 1765

# Exact pins, transitive deps included (resolved on CPython 3.11, linux x86_64).
# onnxruntime 1.32.0 and LiteRT (ai-edge-litert) 2.3.0 are the versions that
# produced shared/corpus/golden/*.npz; LiteRT is the TFLite peer in the bench.
# coremltools 9.0 validates and evaluates the `--target coreml` packages.
REQUIREMENTS="numpy==2.4.6
onnx==1.22.0
onnxruntime==1.32.0
protobuf==7.36.2
flatbuffers==25.12.19
ml_dtypes==0.6.0
packaging==26.4
typing_extensions==4.16.0
ai-edge-litert==2.3.0
backports.strenum==1.2.8
tqdm==4.70.1
coremltools==9.0
attrs==26.1.0
cattrs==26.2.1
pyaml==26.7.0
PyYAML==6.0.4
sympy==1.14.0
mpmath==1.3.0"

log() { printf '[setup-test-env] %s\n' "$*" >&2; }

mkdir -p "$CACHE"
# absolute paths without a trailing slash, so env.sh works from any directory
VENV="$(realpath -m "$VENV")"
NODE_DIR="$(realpath -m "$NODE_DIR")"

# --- 0. a base interpreter that can create venvs ---------------------------
if ! command -v "$BASE_PY" >/dev/null 2>&1 || ! "$BASE_PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    log "installing python3 + python3-venv with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
    BASE_PY=python3
fi

# --- 1. venv ----------------------------------------------------------------
PY="$VENV/bin/python"
VENV_STAMP="$VENV/.kiln-requirements"
want_stamp="$("$BASE_PY" -c 'import sys; print(sys.version.split()[0])')
$REQUIREMENTS"

if [[ -x "$PY" ]] && [[ -f "$VENV_STAMP" ]] && [[ "$(cat "$VENV_STAMP")" == "$want_stamp" ]] \
    && "$PY" -c 'import numpy, onnx, onnxruntime, ai_edge_litert, coremltools' >/dev/null 2>&1; then
    log "venv up to date: $VENV"
else
    # Rebuild from scratch (~20 s): no stale packages, and a changed base Python is picked up.
    log "creating venv $VENV"
    rm -rf "$VENV"
    "$BASE_PY" -m venv "$VENV"
    log "installing pinned requirements into $VENV"
    printf '%s\n' "$REQUIREMENTS" >"$VENV/kiln-requirements.txt"
    "$PY" -m pip install --disable-pip-version-check -q --only-binary=:all: \
        -r "$VENV/kiln-requirements.txt"
    "$PY" -c 'import numpy, onnx, onnxruntime, ai_edge_litert, coremltools'
    printf '%s\n' "$want_stamp" >"$VENV_STAMP"
fi

# --- 2. ONNX backend node tests -------------------------------------------
NODE_STAMP="${NODE_DIR%/}.kiln-stamp" # beside the dir, so it holds only test dirs
want_node_stamp="onnx==$ONNX_TESTS_VERSION onnx/backend/test/data/node"
count_tests() { find "$1" -mindepth 2 -maxdepth 2 -name model.onnx 2>/dev/null | wc -l; }

if [[ -f "$NODE_STAMP" ]] && [[ "$(cat "$NODE_STAMP")" == "$want_node_stamp" ]] \
    && (( $(count_tests "$NODE_DIR") >= MIN_NODE_TESTS )); then
    log "node tests up to date: $NODE_DIR"
else
    WHEELS="$CACHE/wheels"
    mkdir -p "$WHEELS"
    wheel="$(ls "$WHEELS"/onnx-"$ONNX_TESTS_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
    if [[ -z "$wheel" ]]; then
        log "downloading onnx==$ONNX_TESTS_VERSION wheel"
        "$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
            -d "$WHEELS" "onnx==$ONNX_TESTS_VERSION"
        wheel="$(ls "$WHEELS"/onnx-"$ONNX_TESTS_VERSION"-*.whl | head -n1)"
    fi
    log "extracting node tests from $(basename "$wheel")"
    tmp="$(mktemp -d "$CACHE/.node-tests.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    # zipfile instead of unzip(1): nothing extra to install on a bare machine.
    if ! "$PY" - "$wheel" "$tmp" <<'EOF'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "onnx/backend/test/data/node/"
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        sys.exit(f"no {prefix} in {wheel}")
    z.extractall(dest, names)
EOF
    then
        log "cannot extract $wheel; removed it, run again to re-download"
        rm -f "$wheel"
        exit 1
    fi
    n="$(count_tests "$tmp/onnx/backend/test/data/node")"
    if (( n < MIN_NODE_TESTS )); then
        log "only $n node tests found in the wheel (expected >= $MIN_NODE_TESTS)"
        exit 1
    fi
    rm -rf "$NODE_DIR"
    mkdir -p "$(dirname "$NODE_DIR")"
    mv "$tmp/onnx/backend/test/data/node" "$NODE_DIR"
    rm -rf "$tmp"
    trap - EXIT
    printf '%s\n' "$want_node_stamp" >"$NODE_STAMP"
    log "extracted $n node tests into $NODE_DIR"
fi

# --- 3. env file ------------------------------------------------------------
ENV_FILE="$HOME/.cache/kiln/env.sh"
mkdir -p "$(dirname "$ENV_FILE")"
env_text="# generated by scripts/setup-test-env.sh
export KILN_PYTHON=\"$PY\"
export KILN_ONNX_NODE_TESTS=\"$NODE_DIR\""
if [[ ! -f "$ENV_FILE" ]] || [[ "$(cat "$ENV_FILE")" != "$env_text" ]]; then
    printf '%s\n' "$env_text" >"$ENV_FILE"
fi

log "node tests: $(count_tests "$NODE_DIR"); env written to $ENV_FILE"
echo "KILN_PYTHON=$PY"
echo "KILN_ONNX_NODE_TESTS=$NODE_DIR"
