#!/usr/bin/env bash
# The plain-tools pipeline the benchmark compares `cargo xtask build` with: the steps a shell
# builder takes (curl, sha256sum, unzip, mkfs.ext4 -d or mksquashfs -comp xz, sha256sum).
# Usage: plain-pipeline.sh BASE_URL VERSION WORK_DIR ext4|squashfs PHASES_FILE
set -euo pipefail
url=$1 version=$2 work=$3 format=$4 phases=$5
cd "$work"
mark=$EPOCHREALTIME
phase() { local now=$EPOCHREALTIME; echo "$1 $now $mark" >>"$phases"; mark=$now; }

curl -fsSL -o alloy-linux-amd64.zip "$url/v$version/alloy-linux-amd64.zip"
curl -fsSL -o SHA256SUMS "$url/v$version/SHA256SUMS"
phase download
grep ' alloy-linux-amd64.zip$' SHA256SUMS | sha256sum -c --quiet -
phase verify
unzip -q alloy-linux-amd64.zip
mkdir -p tree/usr/bin tree/usr/lib/extension-release.d
mv alloy-linux-amd64 tree/usr/bin/alloy
chmod 0755 tree/usr/bin/alloy
printf 'ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\n' \
  >tree/usr/lib/extension-release.d/extension-release.alloy
phase extract
case "$format" in
  ext4)
    size=$(($(du -sb tree | cut -f1) * 11 / 10 + 16 * 1024 * 1024))
    truncate -s "$size" alloy.raw
    mkfs.ext4 -q -d tree -E root_owner=0:0 alloy.raw
    ;;
  squashfs)
    mksquashfs tree alloy.raw -all-root -comp xz -noappend -quiet -no-progress >/dev/null
    ;;
esac
phase pack
sha256sum alloy.raw >alloy.raw.sha256
phase hash
