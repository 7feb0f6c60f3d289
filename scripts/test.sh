#!/usr/bin/env bash
# Runs the whole husk test suite:
#   1. unit tests and host tests (`cargo test --workspace`): device models,
#      bad input, each `husk check` line made to fail, the agent as a host
#      process, the VMM with the tiny test guest on this host's /dev/kvm;
#   2. the KVM test host's own self-test;
#   3. the microVM suite (tests/microvm): real guest kernel and agent,
#      containers through the husk CLI, runc and husk compared, inside
#      tests/kvm-host unless this host has hardware KVM;
#   4. a smoke pass of the benchmark harness.
# Fails if any part fails or if the microVM suite did not run its cases.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n== %s\n' "$*" >&2; }

scripts/setup.sh --no-check

say "unit and host tests"
cargo build --locked -p husk-runtime -p husk-agent --bins
cargo test --locked --workspace

say "KVM test host self-test"
tests/kvm-host.d/selftest.sh

say "microVM suite"
suite=$(cargo test --locked --release -p husk-tests --test microvm --no-run --message-format=json 2>/dev/null |
  /usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "microvm":
        print(m["executable"])')
expected=$("$suite" --list 2>/dev/null | grep -c ': test$')
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
HUSK_BIN="$PWD/target/release/husk" tests/kvm-host --timeout 2400 -- "$suite" --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -c '^test .* \.\.\. ok$' "$log" || true)
if [ "$status" -ne 0 ] || [ "$passed" -ne "$expected" ]; then
  echo "microVM suite: exit $status, $passed of $expected cases passed" >&2
  exit 1
fi
echo "microVM suite: all $expected cases passed" >&2

say "benchmark smoke pass (keeps the harness working; never judged on budgets)"
cargo build --locked --release -p husk-benches
bench_out=$(mktemp -d)
# Every workload, the Linux ones in one boot of the test host.
target/release/husk-bench all --smoke --out "$bench_out"
rm -rf "$bench_out"

echo "microVM suite: $expected passed, 0 failed"
