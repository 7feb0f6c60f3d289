#!/usr/bin/env bash
# Builds the tiny test guest: build.sh OUTDIR; prints the ELF's path last.
# Needs binutils (as, ld).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR}
mkdir -p "$out"
as --64 -o "$out/guest.o" "$here/guest.S"
ld -m elf_x86_64 -nostdlib --no-warn-rwx-segments -T "$here/guest.ld" -o "$out/husk-test-guest" "$out/guest.o"
rm -f "$out/guest.o"
echo "$out/husk-test-guest"
