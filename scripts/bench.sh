#!/usr/bin/env bash
# Builds what the benchmark harness needs and runs every workload, husk
# against runc (and QEMU microvm), into one table and one plot.
#
#   scripts/bench.sh                 # results/all-<date>/results.md and all.svg
#   scripts/bench.sh --smoke         # one round of everything (CI)
#   scripts/bench.sh --only boot,pods --with 'pods=--density 50'
#
# The arguments go to `husk-bench all` (see its --help). The packages,
# guest kernel, initramfs and husk come from scripts/setup.sh; virtiofsd
# (the virtio-fs peer) is built once from crates.io into ~/.cache/husk.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bench: %s\n' "$*" >&2; }

scripts/setup.sh --no-check
cache="${HUSK_CACHE_DIR:-$HOME/.cache/husk}"
if [ ! -x "$cache/virtiofsd/bin/virtiofsd" ]; then
  say "virtiofsd (the virtio-fs peer), once into $cache/virtiofsd"
  missing=()
  for p in libcap-ng-dev libseccomp-dev pkg-config; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  cargo install --locked --quiet virtiofsd --version '^1.14' --root "$cache/virtiofsd"
fi
cargo build --release --locked -p husk-benches
exec target/release/husk-bench all "$@"
