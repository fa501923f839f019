#!/usr/bin/env bash
# Idempotent setup of what the WebAssembly build and its tests need on a
# fresh Debian machine (see ../shared/notes/toolchain.md):
#   1. std for wasm32-unknown-unknown plus its source (cargo xtask wasm
#      rebuilds std): rustup's wasm32 target and rust-src, else Debian's
#      rustc-web, cargo-web, rust-web-src and lld-22;
#   2. wasm-bindgen-cli at the crate's pinned version;
#   3. Chromium (Debian) for the browser tests;
#   4. npm tools in $KILN_NPM (default ~/.cache/kiln/npm): binaryen
#      (wasm-opt), playwright-core, onnxruntime-web (the peer), webpack (the
#      bundler test).
set -euo pipefail

BINDGEN=0.2.130 # = runtime-wasm/Cargo.toml
NPM_DIR="${KILN_NPM:-$HOME/.cache/kiln/npm}"
NPM_DEPS='"binaryen": "132.0.0", "playwright-core": "1.65.1", "onnxruntime-web": "1.30.0", "webpack": "5.113.0", "webpack-cli": "6.0.1"'

log() { printf '[setup-wasm] %s\n' "$*" >&2; }
sudo=""
[[ $(id -u) = 0 ]] || sudo=sudo
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "apt-get install ${missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
        { $sudo apt-get update -qq >&2 &&
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; }
}

# --- 1. wasm32 std and its source ------------------------------------------
have_rustup_wasm() {
    command -v rustup >/dev/null 2>&1 || return 1
    timeout 10 rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown &&
        [[ -f "$(rustc --print sysroot)/lib/rustlib/src/rust/library/Cargo.lock" ]]
}
if have_rustup_wasm; then
    log "rustup has wasm32-unknown-unknown and rust-src"
elif command -v rustup >/dev/null 2>&1 &&
    timeout 60 rustup target add wasm32-unknown-unknown >&2 &&
    timeout 120 rustup component add rust-src >&2 && have_rustup_wasm; then
    log "rustup: added wasm32-unknown-unknown and rust-src"
else
    log "rustup cannot provide wasm32 std: using Debian's rustc-web and its std source"
    apt_install rustc-web cargo-web rust-web-src lld-22
    readlink -e /usr/bin/rust-lld >/dev/null || { log "/usr/bin/rust-lld is dangling: install lld-22"; exit 1; }
fi

# --- 2. wasm-bindgen-cli -----------------------------------------------------
if [[ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $BINDGEN" ]]; then
    log "cargo install wasm-bindgen-cli $BINDGEN (about 2-3 minutes)"
    # not --locked: the locked webpki-roots is not on every mirror
    cargo install -q wasm-bindgen-cli --version "=$BINDGEN" >&2
fi

# --- 3. Chromium ---------------------------------------------------------------
apt_install chromium

# --- 4. npm tools ----------------------------------------------------------------
mkdir -p "$NPM_DIR"
want="{ \"name\": \"kiln-test-tools\", \"private\": true, \"version\": \"0.0.0\", \"dependencies\": { $NPM_DEPS } }"
if [[ -f "$NPM_DIR/package.json" ]] && [[ "$(cat "$NPM_DIR/package.json")" == "$want" ]] &&
    [[ -x "$NPM_DIR/node_modules/.bin/wasm-opt" ]] && [[ -d "$NPM_DIR/node_modules/onnxruntime-web" ]] &&
    [[ -d "$NPM_DIR/node_modules/playwright-core" ]]; then
    log "npm tools up to date: $NPM_DIR"
else
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    printf '%s\n' "$want" >"$NPM_DIR/package.json"
    log "npm install in $NPM_DIR"
    (cd "$NPM_DIR" && npm install --no-audit --no-fund --loglevel=error >&2)
fi
