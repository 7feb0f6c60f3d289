#!/usr/bin/env bash
# fetch-debian-package.sh SUITE PACKAGE NAME BINARY
#
# Unpacks PACKAGE from a later Debian SUITE under the cache as NAME, for
# the engines Debian 12 does not ship: Docker 23+ (trixie's docker.io,
# which takes `--runtime io.containerd.husk.v2` to the shim) and
# containerd 2.x (forky's containerd). apt downloads and checks it against
# the suite's signed lists, kept in a directory of its own (the system's
# sources and installed packages are untouched); nothing is installed.
# The binaries run on Debian 12's libc. Prints NAME's BINARY path (relative
# to the package's root); a cached one is reused.
set -euo pipefail

suite=$1 package=$2 name=$3 binary=$4
cache="${HUSK_CACHE_DIR:-$HOME/.cache/husk}"
link="$cache/$name"
if [[ -x "$link/$binary" ]]; then
  echo "$link/$binary"
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
(cd "$work" && apt-get "${apt_opts[@]}" download "$package/$suite")
deb=$(ls "$work/${package}"_*.deb)
version=$(dpkg-deb -f "$deb" Version)
dest="$cache/$name-$version"
rm -rf "$dest.tmp"
dpkg-deb -x "$deb" "$dest.tmp"
"$dest.tmp/$binary" --version >&2
rm -rf "$dest"
mv "$dest.tmp" "$dest"
ln -sfn "$dest" "$link"
echo "$link/$binary"
