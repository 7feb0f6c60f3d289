#!/usr/bin/env bash
# Builds husk's guest kernel (vmlinux) from Debian's linux-source-6.12 with
# the fragments in fragments/, merged onto tinyconfig, and caches it under
# ${HUSK_CACHE_DIR:-~/.cache/husk}/kernel/<version>-<hash>/ keyed by the
# source package version and the hash of the fragments and this script.
# A build with nothing changed takes about a second.
#
#   kernel-config/build.sh               # build if needed; print the vmlinux path last
#   kernel-config/build.sh --print-path  # print the cached path; fail if not built
#   kernel-config/build.sh --force       # rebuild even if cached
#
# Needs (Debian): linux-source-6.12 bc bison flex libelf-dev libssl-dev cpio
# xz-utils make gcc; installs them when missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
say() { printf 'kernel: %s\n' "$*" >&2; }

print_only=0 force=0
for arg in "$@"; do
  case "$arg" in
    --print-path) print_only=1 ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) say "unknown option $arg"; exit 2 ;;
  esac
done

pkg=linux-source-6.12
tarball=/usr/src/linux-source-6.12.tar.xz
deps=(bc bison flex libelf-dev libssl-dev cpio xz-utils make gcc)
if [ ! -f "$tarball" ] && [ "$print_only" = 0 ]; then
  say "installing $pkg"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" "${deps[@]}" >/dev/null
fi
version=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) || { say "$pkg is not installed"; exit 1; }
hash=$(cat "$0" "$here"/fragments/*.config | sha256sum | cut -c1-16)
cache=${HUSK_CACHE_DIR:-$HOME/.cache/husk}/kernel
out="$cache/$version-$hash"

if [ "$print_only" = 1 ]; then
  [ -f "$out/vmlinux" ] || { say "not built yet: $out/vmlinux"; exit 1; }
  echo "$out/vmlinux"; exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -f "$out/vmlinux" ] && [ "$force" = 0 ]; then
  echo "$out/vmlinux"; exit 0
fi

src="$cache/src-$version"
if [ ! -f "$src/Makefile" ]; then
  say "extracting $tarball"
  rm -rf "$src.tmp" && mkdir -p "$src.tmp"
  tar -xf "$tarball" -C "$src.tmp" --strip-components=1
  mv "$src.tmp" "$src"
fi

log="$src/husk-build.log"
say "configuring (tinyconfig + $(ls "$here/fragments" | tr '\n' ' '))"
(
  cd "$src"
  make tinyconfig >"$log" 2>&1
  ./scripts/kconfig/merge_config.sh -m .config "$here"/fragments/*.config >>"$log" 2>&1
  make olddefconfig >>"$log" 2>&1
) || { tail -n 30 "$log" >&2; say "configuration failed (log: $log)"; exit 1; }

# Every option the fragments ask for must have survived kconfig.
dropped=()
while IFS= read -r line; do
  case "$line" in CONFIG_*=*) ;; *) continue ;; esac
  grep -qxF "$line" "$src/.config" || dropped+=("$line (got: $(grep -E "^(# )?${line%%=*}[= ]" "$src/.config" || echo unset))")
done < <(cat "$here"/fragments/*.config)
if ((${#dropped[@]})); then
  say "kconfig did not keep these options (missing dependency?):"
  printf '  %s\n' "${dropped[@]}" >&2
  exit 1
fi

say "building vmlinux with $(nproc) jobs (log: $log)"
start=$(date +%s)
(cd "$src" && make -j"$(nproc)" vmlinux >>"$log" 2>&1) || { tail -n 40 "$log" >&2; say "build failed"; exit 1; }
say "built in $(( $(date +%s) - start )) s"

readelf -n "$src/vmlinux" | grep -q 'Xen.*0x00000012\|Xen.*PHYS32' || {
  say "vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): CONFIG_PVH is not effective"; exit 1; }

tmp="$out.tmp.$$"
rm -rf "$tmp" && mkdir -p "$tmp"
cp "$src/vmlinux" "$tmp/vmlinux"
cp "$src/.config" "$tmp/config"
rm -rf "$out" && mv "$tmp" "$out"
echo "$out/vmlinux"
