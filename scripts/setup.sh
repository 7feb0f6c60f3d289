#!/usr/bin/env bash
# Installs what husk needs on a fresh Debian 12 machine, builds everything
# (guest kernel, agent initramfs, husk), and runs `husk check`, through the
# KVM test host (tests/kvm-host) when this host cannot boot Linux guests.
#
#   scripts/setup.sh            # install, build, check
#   scripts/setup.sh --no-check # install and build only (CI, test suite)
#
# Idempotent: a second run installs nothing and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

check=1
for arg in "$@"; do
  case "$arg" in
    --no-check) check=0 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "setup: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*" >&2; }

# Debian packages: the test host (QEMU, Debian's kernel, busybox), the guest
# kernel build, and the container tools husk is tested against.
packages=(
  qemu-system-x86 linux-image-amd64 busybox-static
  linux-source-6.12 bc bison flex libelf-dev libssl-dev cpio xz-utils kmod dwarves make gcc
  iproute2 util-linux procps strace runc podman conmon containerd docker.io
  # the CRI end-to-end test: protoc for its client's build, CNI plugins
  # for the pod network
  protobuf-compiler containernetworking-plugins
  # the network and fileio benchmarks (copied into their containers' rootfs)
  iperf3 fio
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cache="${HUSK_CACHE_DIR:-$HOME/.cache/husk}"
mkdir -p "$cache"

# Later engines than Debian 12's, unpacked under the cache, not installed:
# Docker 26 (the shim's Docker path) and containerd 2 (task API v3 era).
say "Docker 26 and containerd 2 from later Debian suites"
scripts/fetch-debian-package.sh trixie docker.io docker-engine usr/sbin/dockerd >/dev/null
scripts/fetch-debian-package.sh forky containerd containerd-2 usr/bin/containerd >/dev/null

say "guest kernel"
vmlinux=$(kernel-config/build.sh | tail -n 1)
ln -sfn "$vmlinux" "$cache/vmlinux"

say "agent initramfs"
initramfs=$(scripts/build-initramfs.sh | tail -n 1)
ln -sfn "$initramfs" "$cache/husk-initramfs.cpio"

say "husk"
cargo build --release --locked -p husk-runtime -p husk-shim --bins
# The CRI client of the microVM suite's Kubernetes test.
cargo build --release --locked -p husk-cri-tests --bins
husk="$PWD/target/release/husk"
say "built $husk, kernel $cache/vmlinux, initramfs $cache/husk-initramfs.cpio"

if ((check)); then
  if grep -qwE 'vmx|svm' /proc/cpuinfo && [ ! -e /sys/module/kvm_pvm ]; then
    "$husk" check
  else
    say "this host's /dev/kvm cannot boot Linux guests: running husk check inside tests/kvm-host"
    tests/kvm-host -- "$husk" check
  fi
fi
