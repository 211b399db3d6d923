#!/usr/bin/env bash
# Builds the real systemd-sysupdate and systemd-pull (systemd 257.x) from Debian trixie's systemd
# source package, for the tests that run the real client. No Debian release packages
# systemd-sysupdate, so it is built from systemd's own source (the orig tarball; Debian's patches
# are not needed for these two binaries). SYSUPDATE_SERIES=252 builds systemd 252.x's from
# Debian 12's source instead: the client of Flatcar's older LTS lines, which reads other transfer
# file names.
#
# The result is cached in ~/.cache/alloy-sysext-tests/sysupdate-<systemd version>/:
#   systemd-sysupdate, systemd-pull     rpath $ORIGIN/lib
#   lib/libsystemd-shared-<series>.so
# It is built in a temporary directory and renamed into place whole, so an interrupted build
# never leaves a half-made cache. When a cached build runs, nothing is downloaded or built.
# The last line on stdout is the directory.
#
#   bash scripts/build-sysupdate.sh                         # the newest 257.x in trixie, or the cached one
#   SYSUPDATE_SERIES=252 bash scripts/build-sysupdate.sh    # the newest 252.x in bookworm
#   SYSUPDATE_SYSTEMD_VERSION=257.13-1~deb13u1 bash scripts/build-sysupdate.sh
set -euo pipefail

cache="${ALLOY_SYSEXT_TEST_CACHE:-$HOME/.cache/alloy-sysext-tests}"
series="${SYSUPDATE_SERIES:-257}"
case "$series" in
  257) suites="trixie" ;;
  252) suites="bookworm bookworm-updates" ;;
  *) echo "SYSUPDATE_SERIES=$series: only 257 (trixie) and 252 (bookworm) are known" >&2; exit 2 ;;
esac
wanted="${SYSUPDATE_SYSTEMD_VERSION:-}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
say() { echo "==> $*" >&2; }

# A cached build is usable when its binary runs and says it is systemd $series.
usable() {
  [ -x "$1/systemd-sysupdate" ] && [ -x "$1/systemd-pull" ] &&
    "$1/systemd-sysupdate" --version 2>/dev/null | head -n 1 | grep -q "^systemd $series "
}

if [ -z "$wanted" ]; then
  # Fast path: any cached 257.x build (newest first) is good enough, without asking apt.
  for dir in $(find "$cache" -maxdepth 1 -type d -name "sysupdate-$series.*" 2>/dev/null | sort -rV); do
    if usable "$dir"; then
      echo "$dir"
      exit 0
    fi
  done
elif usable "$cache/sysupdate-$wanted"; then
  echo "$cache/sysupdate-$wanted"
  exit 0
fi

# 1. the suite's sources: a deb-src entry only, so no binary package of another release can ever
#    be installed.
sources="/etc/apt/sources.list.d/alloy-sysext-${suites%% *}-src.sources"
if [ ! -f "$sources" ]; then
  say "adding $sources (deb-src for $suites)"
  printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$suites" | as_root tee "$sources" >/dev/null
fi
say "apt-get update"
as_root apt-get update -qq >&2

if [ -z "$wanted" ]; then
  wanted=$(apt-cache showsrc systemd 2>/dev/null | sed -n "s/^Version: \($series\..*\)/\1/p" | sort -rV | head -n 1)
  [ -n "$wanted" ] || { echo "no systemd $series.x source in apt's deb-src index for $suites" >&2; exit 1; }
  if usable "$cache/sysupdate-$wanted"; then
    echo "$cache/sysupdate-$wanted"
    exit 0
  fi
fi

# 2. build dependencies (Debian 12's meson 1.0.1 is new enough).
packages=(meson ninja-build gperf pkg-config gcc libc6-dev libcap-dev libmount-dev libcurl4-openssl-dev
  libssl-dev libgcrypt20-dev libblkid-dev libfdisk-dev libzstd-dev liblzma-dev zlib1g-dev libbz2-dev
  python3-jinja2 python3-pyelftools patchelf dpkg-dev gnupg xz-utils)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/.sysupdate-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

say "apt-get source --download-only systemd=$wanted"
apt-get source --download-only "systemd=$wanted" >&2
orig=$(find . -maxdepth 1 -name 'systemd_*.orig.tar.*' | head -n 1)
tar -xf "$orig"
src=$(find . -maxdepth 1 -mindepth 1 -type d -name 'systemd*' | head -n 1)
[ -f "$src/meson.build" ] || { echo "no meson.build in $orig" >&2; exit 1; }
meson_options="$src/meson_options.txt"
[ -f "$src/meson.options" ] && meson_options="$src/meson.options"

# 3. only what sysupdate and systemd-pull need; every other optional feature off, so the build
#    needs no more packages than the ones above (and takes minutes, not an hour).
options=(
  -Dmode=release -Doptimization=1 -Ddebug=false
  -Dsysupdate=enabled -Dsysupdated=disabled -Dimportd=enabled -Dlibcurl=enabled -Dopenssl=enabled
  -Dfdisk=enabled -Dblkid=enabled -Dxz=enabled -Dzlib=enabled
  -Dtests=false -Dfuzz-tests=false -Dinstall-tests=false -Dslow-tests=false
  -Dman=disabled -Dhtml=disabled -Dtranslations=false -Dselinux=disabled -Dapparmor=disabled
  -Dsmack=false -Dpolkit=disabled -Dima=false -Dipe=false -Daudit=disabled -Dpam=disabled
  -Dkmod=disabled -Dxenctrl=disabled -Dpasswdqc=disabled -Dpwquality=disabled -Dmicrohttpd=disabled
  -Dlibcryptsetup=disabled -Dlibcryptsetup-plugins=disabled -Didn=false -Dlibidn2=disabled
  -Dlibidn=disabled -Dlibiptc=disabled -Dqrencode=disabled -Dgnutls=disabled -Dp11kit=disabled
  -Dlibfido2=disabled -Dtpm2=disabled -Delfutils=disabled -Dlz4=disabled -Dxkbcommon=disabled
  -Dpcre2=disabled -Dglib=disabled -Ddbus=disabled -Dlibarchive=disabled -Dbootloader=disabled
  -Dukify=disabled -Dbpf-framework=disabled -Dvmspawn=disabled -Dhomed=disabled -Dnetworkd=false
  -Dresolve=false
)
# The list is 257's. Older releases lack some options (left out: they did not exist, so there is
# nothing to disable) and spell some features as true/false combos rather than enabled/disabled.
accepted=()
for option in "${options[@]}"; do
  name=${option#-D}
  name=${name%%=*}
  value=${option#*=}
  case "$name" in
    optimization | debug)
      accepted+=("$option")
      continue
      ;;
  esac
  definition=$(grep -A6 "^option('$name'" "$meson_options" || true)
  if [ -z "$definition" ]; then
    say "systemd $wanted has no meson option $name: left out"
    continue
  fi
  # A feature, or a combo that lists our value (257's sysupdated: auto/enabled/disabled), takes
  # it as it is; an older boolean-like combo (auto/true/false) or a boolean gets true/false.
  if ! grep -q "'feature'" <<<"$definition" && ! grep -q "'$value'" <<<"$definition"; then
    case "$value" in enabled) value=true ;; disabled) value=false ;; esac
  fi
  accepted+=("-D$name=$value")
done
say "meson setup (systemd $wanted)"
meson setup "$work/build" "$src" "${accepted[@]}" >&2
say "ninja systemd-sysupdate systemd-pull (several minutes)"
ninja -C "$work/build" systemd-sysupdate systemd-pull >&2

# 4. both binaries beside their one private library, found through $ORIGIN: systemd-sysupdate
#    runs systemd-pull from its own directory.
out="$work/out"
mkdir -p "$out/lib"
cp "$work/build/systemd-sysupdate" "$work/build/systemd-pull" "$out/"
cp "$work/build/src/shared/libsystemd-shared-$series.so" "$out/lib/"
for binary in systemd-sysupdate systemd-pull; do
  # shellcheck disable=SC2016 # $ORIGIN is for the dynamic linker, not the shell
  patchelf --set-rpath '$ORIGIN/lib' "$out/$binary"
done
echo "$wanted" > "$out/systemd-version"
usable "$out" || { "$out/systemd-sysupdate" --version >&2; echo "the built systemd-sysupdate does not run" >&2; exit 1; }

dest="$cache/sysupdate-$wanted"
if ! mv -T "$out" "$dest" 2>/dev/null; then
  # Another run finished first: keep its build if it works.
  usable "$dest" || { echo "$dest exists and does not work: remove it and run again" >&2; exit 1; }
fi
say "built $("$dest/systemd-sysupdate" --version | head -n 1)"
echo "$dest"
