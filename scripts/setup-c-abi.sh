#!/usr/bin/env bash
# Idempotent setup of what libkiln's C ABI test needs on a fresh Debian
# machine: gcc (the C example), valgrind (leak and memory checks) and
# cbindgen (checks ffi/include/kiln.h is what ffi/src/lib.rs generates),
# pinned to the version that generated the checked-in header.
set -euo pipefail

CBINDGEN_VERSION=0.29.4
log() { printf '[setup-c-abi] %s\n' "$*" >&2; }
bash "$(dirname "$0")/apt-install.sh" gcc valgrind
if [[ $(cbindgen --version 2>/dev/null) != "cbindgen $CBINDGEN_VERSION" ]]; then
    log "cargo install cbindgen $CBINDGEN_VERSION"
    # Its own target directory: the workspace's shared one keeps its cache.
    CARGO_TARGET_DIR="$HOME/.cache/kiln-cbindgen-target" \
        cargo install --locked --quiet cbindgen --version "$CBINDGEN_VERSION" >&2
fi
log "ok: $(cbindgen --version), $(valgrind --version)"
