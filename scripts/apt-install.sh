#!/usr/bin/env bash
# Installs the Debian packages named as arguments that are not installed
# yet (apt-get update only when the first try fails). Used by the setup
# scripts.
set -euo pipefail

sudo=""
[[ $(id -u) = 0 ]] || sudo=sudo
missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
((${#missing[@]})) || exit 0
printf '[apt-install] apt-get install %s\n' "${missing[*]}" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    { $sudo apt-get update -qq >&2 &&
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; }
