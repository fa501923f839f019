#!/usr/bin/env bash
# Kiln's main job on its defaults: compile a shipped model to a .kiln
# artifact, inspect it, and run it on a few samples.
# The model is scikit-learn's StandardScaler + LogisticRegression on iris,
# exported by skl2onnx (demos/iris/logreg_iris.onnx, 685 bytes).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
cargo build --release -q -p kiln-cli
kiln="$CARGO_TARGET_DIR/release/kiln"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
echo "== kiln compile demos/iris/logreg_iris.onnx"
"$kiln" compile demos/iris/logreg_iris.onnx -o "$out/iris.kiln"
echo
echo "== kiln inspect iris.kiln"
"$kiln" inspect "$out/iris.kiln"
echo
echo "== kiln run iris.kiln --input-csv demos/iris/flowers.csv"
"$kiln" run "$out/iris.kiln" --input-csv demos/iris/flowers.csv --output-dir "$out/pred" --json
echo
echo "predictions:"
"$kiln" run "$out/iris.kiln" --input-csv demos/iris/flowers.csv --json |
  python3 -c 'import json,sys; d=json.load(sys.stdin); n=["setosa","versicolor","virginica"]
for i,l in enumerate(d["label"]["data"]):
    p=d["probabilities"]["data"][3*i:3*i+3]
    print(f"  flower {i+1}: {n[int(l)]:<10} (p={max(p):.3f})")'
