#!/usr/bin/env bash
# Fetches a Docker engine of 23 or later, which takes
# `--runtime io.containerd.husk.v2` straight to the husk shim: Debian 13's
# docker.io (26.1), downloaded and checked by apt from Debian's archive
# with lists of its own (the system's sources and packages are untouched),
# and unpacked under the cache; its dockerd runs on Debian 12's libc. Prints
# the dockerd path. Idempotent: a cached engine is reused.
set -euo pipefail

cache="${HUSK_CACHE_DIR:-$HOME/.cache/husk}"
suite=trixie
link="$cache/docker-engine"
if [[ -x "$link/usr/sbin/dockerd" ]]; then
  echo "$link/usr/sbin/dockerd"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "deb http://deb.debian.org/debian $suite main" >"$work/sources.list"
apt_opts=(
  -qq
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o "APT::Sandbox::User=root"
)
apt-get "${apt_opts[@]}" update
(cd "$work" && apt-get "${apt_opts[@]}" download "docker.io/$suite")
deb=$(ls "$work"/docker.io_*.deb)
version=$(dpkg-deb -f "$deb" Version)
dest="$cache/docker-engine-$version"
rm -rf "$dest.tmp"
dpkg-deb -x "$deb" "$dest.tmp"
"$dest.tmp/usr/sbin/dockerd" --version >&2
rm -rf "$dest"
mv "$dest.tmp" "$dest"
ln -sfn "$dest" "$link"
echo "$link/usr/sbin/dockerd"
