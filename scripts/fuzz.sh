#!/usr/bin/env bash
# Fuzz the artifact parser, the executor, the native and embedded runtimes
# and the TFLite importer (the whole compiler on .tflite bytes) with cargo-fuzz (libFuzzer).
# Usage:
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each target (default: artifact_parse artifact_run runtime_load
# embedded_run tflite_import) for SECONDS (default 60) on its corpus fuzz/corpus/<target>/
# (new interesting inputs are added there; minimise with `scripts/fuzz.sh
# cmin`) plus read-only seeds: the named artifacts in fuzz/seeds/ (regenerate
# with fuzz/make_seeds.sh), or for tflite_import the small .tflite models of
# ../shared/corpus. Exits
# non-zero when any target crashes (panic, abort, sanitizer report, OOM or a
# hang over the per-input timeout); the crashing input is in
# fuzz/artifacts/<target>/ — copy it to fuzz/regressions/<target>/ to keep it.
#
# KILN_FUZZ_KEEP_GOING=1 keeps fuzzing past crashes (libFuzzer fork mode:
# -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1) so a known,
# unfixed bug does not stop the search for others; every crash input is still
# written to fuzz/artifacts/<target>/ and still makes the script fail.
#
#   scripts/fuzz.sh cmin [TARGET...]     minimise the corpora in place
#   scripts/fuzz.sh regress [TARGET...]  replay fuzz/regressions/<target>/*
#
# Toolchain notes (what works on the stable 1.95 toolchain, no nightly):
#   * `cargo install cargo-fuzz --locked` (0.13.2).
#   * cargo-fuzz passes `-Z` flags (-Zsanitizer=address, sancov passes), which
#     stable rejects; RUSTC_BOOTSTRAP=1 lets stable accept them.
#   * AddressSanitizer works on stable with RUSTC_BOOTSTRAP=1 (the ASan
#     runtime ships with rust-std). Set KILN_FUZZ_SANITIZER=none to build
#     without it (faster; panics, OOMs and hangs are still caught).
#   * No `-O`: cargo fuzz's default build is release + debug assertions +
#     overflow checks, so integer overflow in the libraries is a crash.
#     (`-O` alone turns the assertions off.)
#   * fuzz/ is its own cargo workspace with its own target dir (fuzz/target,
#     git-ignored); CARGO_TARGET_DIR is unset here so it does not apply.
set -uo pipefail
cd "$(dirname "$0")/.."

export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR
command -v cargo-fuzz >/dev/null || {
  echo "cargo-fuzz is required: cargo install cargo-fuzz --locked" >&2
  exit 2
}

SAN="${KILN_FUZZ_SANITIZER:-address}"
ALL_TARGETS=(artifact_parse artifact_run runtime_load embedded_run tflite_import sketch_decode)
# Per-input limits: 10 s is a hang, 2 GiB RSS (or one malloc) is an OOM.
# Seeds are up to ~64 KiB; allow mutations to grow to 128 KiB.
LIBFUZZER_ARGS=(-max_len=131072 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1)
KEEP_GOING_ARGS=()
if [[ "${KILN_FUZZ_KEEP_GOING:-0}" == 1 ]]; then
  KEEP_GOING_ARGS=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
fi

# Crash/oom/timeout inputs libFuzzer has written for a target, one per line.
findings() {
  find "fuzz/artifacts/$1" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' \
    -o -name 'timeout-*' -o -name 'leak-*' \) 2>/dev/null | sort
}

run() {
  echo "+ $*" >&2
  "$@"
}

# Read-only seed directory of a target: the named artifacts in fuzz/seeds/,
# or for tflite_import the shared corpus's .tflite models under 64 KB
# (copied to a temporary directory; they are not kept in the repo).
seeds() {
  if [[ "$1" != tflite_import ]]; then
    echo fuzz/seeds
    return
  fi
  local d="${TMPDIR:-/tmp}/kiln-fuzz-tflite-seeds"
  mkdir -p "$d"
  find ../shared/corpus -name '*.tflite' -size -64k -exec cp {} "$d/" \; 2>/dev/null
  echo "$d"
}

mode=fuzz
if [[ "${1:-}" == cmin || "${1:-}" == regress ]]; then
  mode="$1"
  shift
fi
secs=60
if [[ "$mode" == fuzz && "${1:-}" =~ ^[0-9]+$ ]]; then
  secs="$1"
  shift
fi
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${ALL_TARGETS[@]}")

failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== $t ($mode)" >&2
  case "$mode" in
    fuzz)
      before="$(findings "$t")"
      rc=0
      run cargo fuzz run --sanitizer "$SAN" "$t" "fuzz/corpus/$t" "$(seeds "$t")" -- \
        -max_total_time="$secs" "${LIBFUZZER_ARGS[@]}" "${KEEP_GOING_ARGS[@]}" || rc=$?
      new="$(comm -13 <(echo "$before") <(findings "$t") | sed '/^$/d')"
      if [[ $rc -ne 0 || -n "$new" ]]; then
        failed+=("$t")
        [[ -n "$new" ]] && printf "new finding for $t: %s\n" $new >&2
      fi
      ;;
    cmin)
      run cargo fuzz cmin --sanitizer "$SAN" "$t" "fuzz/corpus/$t" -- \
        "${LIBFUZZER_ARGS[@]}" || failed+=("$t")
      ;;
    regress)
      shopt -s nullglob
      inputs=("fuzz/regressions/$t"/*)
      shopt -u nullglob
      if [[ ${#inputs[@]} -eq 0 ]]; then
        echo "(no regression inputs for $t)" >&2
        continue
      fi
      # Given a file (not a directory), libFuzzer runs it once and exits;
      # one run per input so that every still-failing input is reported.
      for f in "${inputs[@]}"; do
        if run cargo fuzz run --sanitizer "$SAN" "$t" "$f" -- "${LIBFUZZER_ARGS[@]}"; then
          echo "pass: $f" >&2
        else
          echo "FAIL: $f" >&2
          failed+=("$t:$(basename "$f")")
        fi
      done
      ;;
  esac
done

if [[ ${#failed[@]} -gt 0 ]]; then
  if [[ "$mode" == fuzz ]]; then
    echo "FAILED: ${failed[*]} (crash inputs under fuzz/artifacts/<target>/)" >&2
  else
    echo "FAILED: ${failed[*]}" >&2
  fi
  exit 1
fi
echo "ok: ${targets[*]} ($mode)" >&2
