#!/usr/bin/env bash
# Builds what the demo page needs: the npm package (cargo xtask wasm) and
# mnist.kiln from the corpus's ONNX model zoo MNIST CNN, then serves the
# repository on http://127.0.0.1:8000/demos/wasm-mnist/ (Ctrl-C stops).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
[[ -f runtime-wasm/pkg/kiln.js ]] || cargo xtask wasm
cargo run --release -q -p kiln-cli -- compile ../shared/corpus/onnx-real/mnist-8_cntk.onnx -o demos/wasm-mnist/mnist.kiln
echo "open http://127.0.0.1:8000/demos/wasm-mnist/"
exec python3 -m http.server --bind 127.0.0.1 8000
