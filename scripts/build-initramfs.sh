#!/usr/bin/env bash
# Builds the guest agent statically (glibc, +crt-static) and packs it as
# /init of an uncompressed cpio newc initramfs, with the few nodes the
# kernel needs before /dev is mounted. Cached by the agent's hash under
# ${HUSK_CACHE_DIR:-~/.cache/husk}/initramfs/; prints the path last.
#
#   scripts/build-initramfs.sh [--debug]
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'initramfs: %s\n' "$*" >&2; }

# The guest profile (Cargo.toml) optimises the agent for size.
profile=guest
case "${1:-}" in
  --debug) profile=debug ;;
  "") ;;
  *) say "unknown option $1"; exit 2 ;;
esac
target=x86_64-unknown-linux-gnu
flags=(--locked -p husk-agent --target "$target")
[ "$profile" = guest ] && flags+=(--profile guest)
# The explicit --target keeps +crt-static off build scripts and proc-macros.
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build "${flags[@]}" >&2
agent="target/$target/$profile/husk-agent"
# PID 1 has no dynamic loader to lean on: refuse a binary that asks for one.
if readelf -l "$agent" | grep -q 'Requesting program interpreter'; then
  say "$agent is dynamically linked; /init must be static"; exit 1
fi

cache=${HUSK_CACHE_DIR:-$HOME/.cache/husk}/initramfs
hash=$( { sha256sum "$agent"; sha256sum "$0"; } | sha256sum | cut -c1-16)
out="$cache/husk-initramfs-$hash.cpio"
if [ -f "$out" ]; then echo "$out"; exit 0; fi

mkdir -p "$cache"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{dev,proc,sys,tmp,run}
install -m 0755 "$agent" "$stage/init"
mknod -m 0600 "$stage/dev/console" c 5 1
mknod -m 0666 "$stage/dev/null" c 1 3
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) >"$out.tmp.$$"
mv "$out.tmp.$$" "$out"
# Keep the cache small: drop older initramfs builds.
find "$cache" -name 'husk-initramfs-*.cpio' ! -path "$out" -mmin +60 -delete 2>/dev/null || true
say "built $out ($(du -h "$out" | cut -f1))"
echo "$out"
