#!/usr/bin/env bash
# Kiln's whole test suite, cheapest checks first. Installs what it needs
# (Rust components, the Python venv with peer runtimes, the ONNX node tests,
# the wasm32 toolchain, wasm-bindgen, Chromium and the npm peers, QEMU and
# the Arm tools, valgrind and cbindgen, PostgreSQL).
# Usage: scripts/test.sh [--quick]   (--quick skips clippy and the no_std cross builds)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[[ ${1:-} == --quick ]] && quick=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { printf '\n== %s\n' "$*"; }

step "toolchain"
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo --version

step "WebAssembly toolchain (wasm32 std, wasm-bindgen, Chromium, npm peers)"
# Before any cargo build: the kiln CLI's build script embeds the wasm32
# engine module, and only builds it when the wasm32 target is installed.
bash scripts/setup-wasm.sh

step "peer environment (Python venv: onnx, onnxruntime, LiteRT; ONNX node tests)"
bash scripts/setup-test-env.sh
# shellcheck disable=SC1091
source "$HOME/.cache/kiln/env.sh"
export KILN_PYTHON KILN_ONNX_NODE_TESTS

step "cargo fmt --check"
cargo fmt --all -- --check

if ((quick == 0)); then
  step "cargo clippy --all-targets -D warnings"
  cargo clippy --workspace --all-targets -q -- -D warnings

  step "no_std builds (format, kernels, engine, protocol, runtime-embedded) for thumbv7em-none-eabihf"
  if timeout 60 rustup target add thumbv7em-none-eabihf >/dev/null 2>&1; then
    cargo build -q --target thumbv7em-none-eabihf -p kiln-format -p kiln-kernels -p kiln-engine -p kiln-protocol \
      -p kiln-runtime-embedded
    # And the firmware's view: the embedded runtime with protocol's alloc off.
    cargo build -q --target thumbv7em-none-eabihf -p kiln-runtime-embedded
    cargo build -q --target thumbv7em-none-eabihf -p kiln-protocol --no-default-features --features embedded-io
    # Signature checks on the device: artifacts and OTA manifests, no heap.
    cargo build -q --target thumbv7em-none-eabihf -p kiln-format --features signature
    cargo build -q --target thumbv7em-none-eabihf -p kiln-protocol --no-default-features --features ota
    cargo build -q --target thumbv7em-none-eabihf -p kiln-runtime-embedded --features ota
    echo "ok: the device crates build without std (runtime-embedded and protocol without alloc; ed25519 checks)"
  else
    echo "warning: rustup could not add thumbv7em-none-eabihf; no_std cross build skipped" >&2
  fi
fi

step "PostgreSQL on 127.0.0.1 (the collector's tests run on SQLite and on it)"
bash scripts/apt-install.sh postgresql
pgdir=$(mktemp -d "${TMPDIR:-/tmp}/kiln-pg.XXXXXX")
KILN_TEST_POSTGRES=$(bash scripts/postgres.sh start "$pgdir" $((20000 + RANDOM % 20000)))
export KILN_TEST_POSTGRES
trap 'bash scripts/postgres.sh stop "$pgdir"; rm -rf "$pgdir"' EXIT
echo "ok: $KILN_TEST_POSTGRES"

step "cargo test (unit, property, corpus cross-check, ONNX node conformance, CLI)"
cargo test --workspace -q 2>&1 | tee "${TMPDIR:-/tmp}/kiln-test.log"

step "WebAssembly package: build (cargo xtask wasm), Node tests, real headless Chromium; the collector dashboard in Chromium"
cargo xtask wasm
cargo test -q -p kiln-cli --test wasm_package -- --ignored --nocapture 2>&1 |
  grep -vE '^\s*(---|\.\.\.|duration_ms:)|^# Subtest' | tail -n 60
cargo test -q -p kiln-cli --test collector -- --ignored dashboard --nocapture 2>&1 |
  grep -E '^dashboard|test result|panicked|FAILED' | cut -c1-400

step "Over-the-air updates: firmware A/B slots on a RAM flash; a 200-device fleet (canary, staged rollout, automatic rollback); a 55 MB download cut three times"
cargo test -q -p kiln-runtime-embedded --features ota --test ota 2>&1 | grep -E 'test result|panicked|FAILED'
cargo test -q -p kiln-cli --test ota -- --ignored --nocapture 2>&1 |
  grep -E '^(version|fleet|[0-9]+-byte|wine|releases|timeline)|^  |test result|panicked|FAILED' | cut -c1-400

step "Cortex-M4F firmware in QEMU (cargo xtask firmware) against native"
if bash scripts/setup-firmware.sh; then
  cargo test -q -p kiln-cli --test firmware -- --ignored --nocapture 2>&1 |
    grep -E '^(mlperf|tflite)|test result|panicked|FAILED' | cut -c1-400
else
  echo "warning: no thumbv7em-none-eabihf target; firmware test skipped" >&2
fi

step "C ABI (libkiln): generated header, C example against kiln run, valgrind"
bash scripts/setup-c-abi.sh
cargo test -q -p kiln-cli --test c_abi -- --ignored 2>&1 | grep -E 'test result|panicked|FAILED|assert' | cut -c1-400

step "Core ML binding (runtime-native --features coreml): a stub off Apple platforms; package and input checks"
cargo clippy -q -p kiln-runtime-native --features coreml --all-targets -- -D warnings
cargo test -q -p kiln-runtime-native --features coreml --lib coreml 2>&1 | grep -E 'test result|panicked|FAILED'

step "conformance tables (ONNX node tests, corpus cross-check)"
cargo test -q -p kiln-cli --test onnx_node --test corpus -- --nocapture 2>&1 | grep -vE '^\s*$' | tail -n 60
