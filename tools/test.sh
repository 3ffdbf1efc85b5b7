#!/usr/bin/env bash
# wattle's test command (README): installs what a fresh Debian/Ubuntu machine lacks, then runs
# formatting, lints, every workspace test (GPU tests on every adapter found) and the CPU kernels'
# tests for aarch64 under qemu.
#
#   tools/test.sh            everything
#   SKIP_INSTALL=1 tools/test.sh    assume the system packages are present
#   SKIP_AARCH64=1 tools/test.sh    skip the qemu run of the NEON kernels
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "test.sh: need root (or sudo) to run: $*" >&2; return 1; fi; }

missing=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if [ "${SKIP_INSTALL:-0}" != 1 ] && command -v apt-get >/dev/null; then
  # A Vulkan loader and, when no Vulkan ICD is present, Mesa's lavapipe.
  have_pkg libvulkan1 || missing+=(libvulkan1)
  if ! compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null &&
     ! compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null; then
    missing+=(mesa-vulkan-drivers)
  fi
  # EGL + Mesa's llvmpipe for wgpu's GL backend.
  for p in libegl1 libegl-mesa0 libgl1-mesa-dri; do have_pkg "$p" || missing+=("$p"); done
  # Cross linker, libc and qemu for the NEON kernels.
  if [ "${SKIP_AARCH64:-0}" != 1 ]; then
    for p in gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static; do
      have_pkg "$p" || missing+=("$p")
    done
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]}"
    sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  if [ "${SKIP_AARCH64:-0}" != 1 ]; then
    rustup target list --installed | grep -q '^aarch64-unknown-linux-gnu$' ||
      rustup target add aarch64-unknown-linux-gnu
  fi
fi

# wgpu's GL backend (EGL) wants a runtime dir; CI shells have none.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR=${TMPDIR:-/tmp}/wattle-xdg-$(id -u)
  mkdir -p -m 700 "$XDG_RUNTIME_DIR"
fi

step "fetching the real test model (SmolLM2-135M Q4_1 GGUF)"
tools/fetch-model.sh || echo "test.sh: could not fetch the model; its tests will say they skipped" >&2

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --release -- -D warnings

step "cargo test (workspace, release)"
cargo test --workspace --release

if [ "${SKIP_AARCH64:-0}" != 1 ]; then
  step "clippy + tests of wattle-kernels for aarch64 (NEON) under qemu"
  cargo clippy -p wattle-kernels --all-targets --release --target aarch64-unknown-linux-gnu -- -D warnings
  cargo test -p wattle-kernels --release --target aarch64-unknown-linux-gnu
fi

step "all tests passed"
