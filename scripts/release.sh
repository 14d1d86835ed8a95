#!/usr/bin/env bash
# Builds the static `shoal` binary that the container image ships
# (FROM scratch: no libc in the image, so nothing may be linked dynamically)
# and copies it to dist/shoal. Honours CARGO_TARGET_DIR.
# Usage: scripts/release.sh [--profile PROFILE]   (default profile: dist)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=dist
if [ "${1:-}" = "--profile" ]; then
  profile=${2:?--profile needs a name}
fi
triple=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-target}

# glibc's static-pie: the binary needs only /dev/urandom from its container.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --profile "$profile" --target "$triple" -p shoal-node --bin shoal

# cargo calls the release profile's directory "release", every other by its name.
bin="$target_dir/$triple/$profile/shoal"
[ -x "$bin" ] || { echo "release.sh: no binary at $bin" >&2; exit 1; }

if ldd "$bin" 2>&1 | grep -q '=>'; then
  echo "release.sh: $bin links shared libraries:" >&2
  ldd "$bin" >&2
  exit 1
fi

mkdir -p dist
install -m 0755 "$bin" dist/shoal
size=$(stat -c %s dist/shoal)
echo "dist/shoal: $size bytes ($((size / 1024 / 1024)) MiB), $(ldd dist/shoal 2>&1 | tr -d '\t' | head -1)"
echo "sha256: $(sha256sum dist/shoal | cut -d' ' -f1)"
