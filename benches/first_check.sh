#!/usr/bin/env bash
# A fresh process's first check with the policy already in the SQLite store (issue: persistent
# store, performance). Starts the local fixtures, fills the store once, then runs the
# `first_check` example N times and prints the median time from process start to verdict, as
# measured inside the process, and the median wall time of the whole process.
#
# bash benches/first_check.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}
cargo build -q --release --example first_check -p mtasts
cargo build -q -p mtasts-fixtures
tmp=$(mktemp -d)
fifo="$tmp/hold"
mkfifo "$fifo"
target/debug/mtasts-fixture "$tmp/fx" < "$fifo" > "$tmp/info" &
fixture=$!
exec 3> "$fifo"
trap 'exec 3>&-; kill $fixture 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do [ -s "$tmp/info" ] && break; sleep 0.1; done
config="$tmp/fx/mtasts.toml"
sed -i "s|^path = \"memory\"|path = \"$tmp/policies.sqlite\"|" "$config"
target/release/examples/first_check "$config" enforce.test mx.enforce.test > /dev/null   # fills the store
inside=()
wall=()
for _ in $(seq "$n"); do
  t0=$(date +%s%N)
  out=$(target/release/examples/first_check "$config" enforce.test mx.enforce.test)
  t1=$(date +%s%N)
  [ "${out#* }" = "pass" ] || { echo "unexpected verdict: $out" >&2; exit 1; }
  inside+=("${out%% *}")
  wall+=("$(( (t1 - t0) / 1000 ))")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "first check from a fresh process, policy in SQLite ($n runs):"
echo "  inside the process (main to verdict): median $(median "${inside[@]}") us"
echo "  whole process (exec to exit):          median $(median "${wall[@]}") us"
