#!/usr/bin/env bash
# Checks the unit with systemd-analyze. Usage: deploy/systemd/verify.sh [path/to/shoal]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shoal=${1:-${SHOAL_BIN:-$here/../../dist/shoal}}

if command -v systemd-analyze >/dev/null 2>&1; then
  # verify resolves ExecStart= on this machine: point it at a real binary.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  sed "s#/usr/local/bin/shoal#$(realpath "$shoal")#g" "$here/shoal.service" >"$work/shoal.service"
  out=$(systemd-analyze verify "$work/shoal.service" 2>&1 || true)
  # Only findings about our unit count (the host's own units may be noisy).
  if echo "$out" | grep -i "shoal.service" | grep -v "^$"; then
    echo "verify.sh: systemd-analyze found problems in shoal.service" >&2
    exit 1
  fi
  echo "systemd-analyze verify: shoal.service clean"
else
  echo "verify.sh: systemd-analyze not installed; unit not checked (apt-get install systemd)"
fi
