#!/usr/bin/env bash
# Cross-builds armada-agent and armada-manager for aarch64-unknown-linux-gnu as static
# binaries into dist/aarch64/, with a SHA256SUMS file.
# Uses `cross` when it and a Docker engine are available (Cross.toml configures it),
# and Debian's Rust cross toolchain (ci/host-deps.sh installs it) otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
out=dist/aarch64
bins=(armada-agent armada-manager)
pkgs=(-p armada-agent -p armada-manager)

if command -v cross >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo "[cross-build] using cross"
  cross build --release --locked --target "$target" "${pkgs[@]}"
  built=target/$target/release
else
  # Debian's rustc-web ships the arm64 std that rustup cannot fetch here; its cargo and
  # rustc are called by path because rustup's come first on PATH. A separate target dir
  # keeps the two compilers' artifacts apart.
  if [ ! -x /usr/bin/cargo ] || [ ! -x /usr/bin/rustc ] || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    echo "[cross-build] Debian's Rust cross toolchain is missing: run ci/host-deps.sh --build (as root)" >&2
    exit 1
  fi
  echo "[cross-build] using Debian's toolchain: $(/usr/bin/rustc --version)"
  export CARGO_TARGET_DIR=${CROSS_TARGET_DIR:-target/cross}
  RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc /usr/bin/cargo build --release --locked \
    --target "$target" "${pkgs[@]}"
  built=$CARGO_TARGET_DIR/$target/release
fi

mkdir -p "$out"
for b in "${bins[@]}"; do
  install -m 0755 "$built/$b" "$out/$b.tmp"
  mv -f "$out/$b.tmp" "$out/$b"
done
(cd "$out" && sha256sum "${bins[@]}" > SHA256SUMS.tmp && mv -f SHA256SUMS.tmp SHA256SUMS)
for b in "${bins[@]}"; do
  if ! file "$out/$b" | grep -q 'ARM aarch64.*statically linked'; then
    echo "[cross-build] $out/$b is not a static aarch64 binary: $(file -b "$out/$b")" >&2
    exit 1
  fi
  printf '[cross-build] %s: %s bytes\n' "$out/$b" "$(stat -c %s "$out/$b")"
done
