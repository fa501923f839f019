#!/usr/bin/env bash
# Regenerates the named fuzz seeds in fuzz/seeds/: real Kiln artifacts
# compiled from the shared corpus models, the ONNX backend node tests (one op
# each) and a few generated single-op models, so that every engine op is
# reachable. Then copies them into fuzz/corpus/<target>/ (run
# `scripts/fuzz.sh cmin` afterwards). Seeds that fail to compile are skipped.
#
# Needs ../shared/corpus; the node tests come from $KILN_ONNX_NODE_TESTS and
# the generated models from $KILN_PYTHON (both set by scripts/setup-test-env.sh
# in ~/.cache/kiln/env.sh); either is skipped when absent.
set -uo pipefail
cd "$(dirname "$0")/.."
[[ -f "$HOME/.cache/kiln/env.sh" ]] && source "$HOME/.cache/kiln/env.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
cargo build -q -p kiln-cli || exit 1
kiln="$CARGO_TARGET_DIR/debug/kiln"
C=../shared/corpus
S=fuzz/seeds
mkdir -p "$S"

compile() { # name model.onnx [kiln args]
  local name="$1" model="$2"
  shift 2
  if ! "$kiln" compile "$model" -o "$S/$name.kiln" "$@" >/dev/null 2>&1; then
    echo "skip $name (does not compile)" >&2
    rm -f "$S/$name.kiln"
  fi
}

# Real models (~1-60 KB artifacts; the >1 MB ones are left out to keep the repo lean).
compile gb_wine "$C/sklearn/gb_wine.onnx"
compile logreg_iris "$C/sklearn/logreg_iris.onnx"
compile mlp_digits "$C/sklearn/mlp_digits.onnx"
compile rf_breast_cancer "$C/sklearn/rf_breast_cancer.onnx"
compile burn_pico_sine "$C/onnx-real/burn_pico_sine.onnx"
compile tflm_hello_world_int8 "$C/tflite-micro/hello_world_int8.tflite"
compile tflm_micro_speech_int8 "$C/tflite-micro/micro_speech_quantized.tflite"
compile mnist8_cntk "$C/onnx-real/mnist-8_cntk.onnx"
# LSTMs: int8x8_16 (QLstm, then QFullyConnected and QSoftmax) and float
# with TFLite's cell clip (LstmCellClip).
compile tflm_mnist_lstm_int8 "$C/tflite-micro/trained_lstm_int8.tflite"
compile tflm_mnist_lstm_f32 "$C/tflite-micro/trained_lstm.tflite"
# Hybrid (float activations, int8 filters): HybridConv.
compile mlperf_kws_hybrid "$C/mlperf-tiny/kws_ref_model_float32.tflite"
# Int8 TFLite with packed weights (QConvPacked, QFullyConnectedPacked),
# depthwise QConv and global QAvgPool.
compile mlperf_kws_int8 "$C/mlperf-tiny/kws_ref_model.tflite"
# Kiln's own quantization: QConv, int8 MaxPool, DynFullyConnected, f16 Cast.
compile mlp_digits_int8 "$C/sklearn/mlp_digits.onnx" --quantize int8 \
  --calibration "$C/sklearn/mlp_digits_train.csv" --labels target
compile mlp_digits_dynamic "$C/sklearn/mlp_digits.onnx" --quantize dynamic
compile mlp_digits_f16 "$C/sklearn/mlp_digits.onnx" --quantize f16
compile pico_sine_int8 "$C/onnx-real/burn_pico_sine.onnx" --quantize int8 \
  --calibration fuzz/pico_sine_calibration.csv
compile ort_logreg_iris_zipmap "$C/onnx-real/ort_logreg_iris_zipmap.onnx"
compile keras_tf2_example "$C/tract-test-cases/keras_tf2_example/model.onnx"
for t in qlstm_3-2-3_T3_S1 xgboost_classifier_tree lgbm_classifier_tensor linear_classifier; do
  compile "tract_$t" "$C/tract-test-cases/$t/model.onnx"
done

# One op each, from the ONNX backend node tests.
if [[ -d "${KILN_ONNX_NODE_TESTS:-}" ]]; then
  for t in transpose_default concat_2d_axis_0 gather_elements_0 averagepool_2d_default \
    lppool_2d_default globalaveragepool globalmaxpool convtranspose batchnorm_example \
    depthtospace_example spacetodepth_example dequantizelinear quantizelinear qlinearconv \
    gru_defaults lstm_defaults instancenorm_example lrn scatter_elements_with_axis triu \
    sum_example where_example max_example softmax_axis_1 relu sigmoid matmul_2d \
    gemm_default_single_elem_vector_bias argmax_default_axis_example leakyrelu \
    mod_mixed_sign_int64 erf flatten_axis1 split_equal_parts_1d_opset13 split_equal_parts_2d \
    clip_default_inbounds shape layer_normalization_2d_axis1_expanded; do
    compile "node_$t" "$KILN_ONNX_NODE_TESTS/test_$t/model.onnx"
  done
else
  echo "skip ONNX node-test seeds (KILN_ONNX_NODE_TESTS unset)" >&2
fi

# Ops whose operands must be compile-time constants (Pad, Slice, Expand, Tile,
# OneHot, Reduce, CumSum, LayerNorm, Reshape, Unsqueeze).
if [[ -x "${KILN_PYTHON:-}" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$KILN_PYTHON" fuzz/gen_onnx_seeds.py "$tmp"
  for f in "$tmp"/gen_*.onnx; do
    n="$(basename "$f" .onnx)"
    compile "$n" "$f"
  done
else
  echo "skip generated seeds (KILN_PYTHON unset)" >&2
fi

for t in artifact_parse artifact_run runtime_load; do
  mkdir -p "fuzz/corpus/$t"
  cp "$S"/*.kiln "fuzz/corpus/$t/"
done
echo "$(ls "$S"/*.kiln | wc -l) seeds, $(du -sh "$S" | cut -f1) in $S" >&2
