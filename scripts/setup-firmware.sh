#!/usr/bin/env bash
# Idempotent setup of what the Cortex-M firmware build and its QEMU test
# need on a fresh Debian machine (see ../shared/notes/toolchain.md §5):
# rustup's thumbv7em-none-eabihf target, QEMU's Arm system emulator, the
# Arm binutils (section sizes, symbols) and gcc (the QEMU plugin that counts
# instructions). Exits 1 when the target cannot be had.
set -euo pipefail

log() { printf '[setup-firmware] %s\n' "$*" >&2; }
bash "$(dirname "$0")/apt-install.sh" qemu-system-arm binutils-arm-none-eabi gcc
if ! rustup target list --installed 2>/dev/null | grep -qx thumbv7em-none-eabihf; then
    log "rustup target add thumbv7em-none-eabihf"
    timeout 60 rustup target add thumbv7em-none-eabihf >&2 || {
        log "rustup could not add thumbv7em-none-eabihf"
        exit 1
    }
fi
log "ok: $(qemu-system-arm --version | head -n 1)"
