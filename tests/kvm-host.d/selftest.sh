#!/usr/bin/env bash
# Self-test of tests/kvm-host: one emulated boot checks many things inside;
# then direct mode, the timeout path and bad options. Prints `ok - …` /
# `not ok - …` per check and `N passed, M failed`.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
kh="$here/kvm-host"
passed=0 failed=0
check() { # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then echo "ok - $name"; passed=$((passed + 1)); else echo "not ok - $name"; failed=$((failed + 1)); fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
touch "$tmp/host-tmp-probe"

# One boot, many checks: the inside half prints KEY=VALUE lines on stdout.
start=$(date +%s.%N)
HOST_TMP_PROBE="$tmp/host-tmp-probe" ODD_VALUE=$'a b\n"c\'$' "$kh" -- bash "$here/kvm-host.d/selftest-inside.sh" >"$tmp/out" 2>"$tmp/err"
status=$?
end=$(date +%s.%N)
out=$(cat "$tmp/out")
check "exit status passes through (3)" [ "$status" = 3 ]
check "stdout without trailing newline kept apart from stderr" grep -qx 'no-newline' "$tmp/out"
check "stderr comes back alone" [ "$(cat "$tmp/err")" = to-stderr ]
check "working directory kept" grep -qx "cwd=$PWD" "$tmp/out"
check "odd environment value kept" grep -qxF "odd=$(printf '%s' $'a b\n"c\'$' | od -An -c | tr -d ' \n')" "$tmp/out"
check "/dev/kvm present inside" grep -qx kvm=yes "$tmp/out"
check "kvm_amd loaded" grep -qx kvm_amd=yes "$tmp/out"
check "a KVM VM can be created inside" grep -qx 'kvm_api=12 vm=True' "$tmp/out"
host_cgroups=$(awk '$2 ~ "^/sys/fs/cgroup" {print $2, $3}' /proc/self/mounts | sort | tr '\n' ';')
check "cgroup layout matches the host" grep -qxF "cgroups=$host_cgroups" "$tmp/out"
check "/tmp writable" grep -qx tmp=writable "$tmp/out"
check "the host's /tmp visible at the same paths" grep -qx host-tmp=visible "$tmp/out"
check "root read-only" grep -qx root=readonly "$tmp/out"
check "veth pairs can be made" grep -qx veth=yes "$tmp/out"
echo "# one emulated boot: $(echo "$end - $start" | bc) s"
[ "$failed" = 0 ] || { echo "# stdout:"; sed 's/^/#   /' "$tmp/out"; echo "# stderr:"; sed 's/^/#   /' "$tmp/err"; }

HUSK_KVM_HOST=direct "$kh" -- sh -c 'exit 7'
check "direct mode runs the command as is (exit 7)" [ $? = 7 ]

"$kh" --timeout 20 -- sleep 1000 2>"$tmp/timeout-err"
status=$?
check "timeout returns 124" [ "$status" = 124 ]
check "timeout is reported" grep -q 'timed out' "$tmp/timeout-err"
sleep 0.5
# Other test hosts may run on this machine: look for this run's QEMU only.
run_dir=$(sed -n 's/.*QEMU killed (run directory \(.*\))$/\1/p' "$tmp/timeout-err")
# ([q]emu: the pattern must not match this check's own command line.)
check "no QEMU left behind" bash -c "[ -n '$run_dir' ] && ! pgrep -f '[q]emu-system-x86_64.*$run_dir/' >/dev/null"

"$kh" --timeout 50 --heartbeat 5 -- sleep 1001 2>"$tmp/heartbeat-err"
check "a timeout shows the last heartbeat and what was running" grep -q 'kvm-host| .* sleep 1001$' "$tmp/heartbeat-err"
check "a timeout shows where the emulated CPU was" grep -q '^kvm-host| RIP=' "$tmp/heartbeat-err"

"$kh" --frobnicate -- true 2>"$tmp/bad-err"
status=$?
check "a bad option is a clear error" bash -c "[ $status = 125 ] && grep -q 'unknown option --frobnicate' '$tmp/bad-err'"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
