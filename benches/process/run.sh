#!/usr/bin/env bash
# A process per delivery (issue 17, item 1): Exim runs one short process per delivery, so every
# delivery pays for building the default engine, one check and the exit flush. Builds the release
# library and benches/process/proc_delivery.c, starts the local fixtures, fills a SQLite store
# with enforce.test's policy and the DNSSEC answers of its MX (one check with the fixtures
# answering), then points the configuration at a DNS server that does not exist (127.0.0.1:9),
# so that a process that had to look anything up would not get its `pass`, and runs N rounds of
#
#   (a) a process that dlopen()s libmtasts.so, reads the MX's chain and exits
#   (b) the same, plus mtasts_check("enforce.test", "mx.enforce.test", chain) with the default
#       engine (MTASTS_CONFIG) and a normal exit (the exit handler writes the TLSRPT count)
#
#   (c) as (b), with [https] ca_file = the system's bundle of roots (/etc/ssl/certs/
#       ca-certificates.crt) plus the fixture's root: what a delivery pays for its trust anchors
#       with a real root set (skipped when the bundle is missing)
#
# and prints the medians of their exec-to-exit wall times and CPU times. Afterwards it checks in
# the store that every (b) and (c) process's session was counted. Not run by CI (timings need a
# quiet machine).
#
#   bash benches/process/run.sh [N]        (default 200)
#
# LIB=path measures another build of the library (the same bench against an older commit's
# libmtasts.so, for a before/after); AGE=K runs K (b) processes before measuring, so that the
# store's write-ahead log is as a busy MTA leaves it rather than empty (each delivery's exit
# flush adds two pages to it).
#
# FLOOR=1 replaces case (c) by a delivery without SQLite (no store: the policy pinned by an
# override in the configuration, no DANE, the chain validated): the cost of everything but the
# store (its sessions are not counted in the store, and the check below allows for that).
#
# HOLD=1 runs `mtasts serve` on the same store during the bench, so that the deliveries are not
# the first process to open it (each delivery is otherwise, and rebuilds the index of the
# store's write-ahead log from the whole log).
#
# SERVE=1 sets `[serve] check_socket` and runs `mtasts serve` on it and on the same store: the
# deliveries hand their check to it (docs/architecture.md, "Checks handed to mtasts serve") and
# open no store themselves; serve counts the sessions, and is stopped (which writes them) before
# the count below. Case (c) is not run: its configuration is not serve's, so serve refuses it.
#
# STAT=1 prints, per process, the page faults (`perf stat` of 100) and the user-space
# instructions (callgrind, median of 5) of (a) and (b): counts that the machine's load does not
# stretch, for comparing builds on a busy machine (CG_OUT=prefix keeps a callgrind profile of each).
# PERF=1 records a profile of 200 (b) processes into $PERF_OUT (default /tmp/proc-delivery.perf)
# after the bench; STRACE=1 prints `strace -f -c` of one (b) process and the fsync calls of one.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-200}
cargo build -q --release -p mtasts --lib
cargo build -q -p mtasts-fixtures --bin mtasts-fixture
. fixtures/start.sh
start_fixture
config="$tmp/fx/mtasts.toml"
grep -q '^dnssec = "validate"' "$config" || { echo "the fixture's configuration does no DANE" >&2; exit 1; }
sed -i "s|^path = \"memory\"|path = \"$tmp/store.sqlite\"|" "$config"
lib=${LIB:-$PWD/target/release/libmtasts.so}
echo "library: $lib"
cc -std=c99 -O2 -Wall -Wextra -Werror -Iinclude benches/process/proc_delivery.c -ldl -o "$tmp/proc_delivery"
bin=$tmp/proc_delivery
chain=$tmp/fx/mx-enforce.der
export MTASTS_CONFIG=$config
# Fill the store: DNS (DNSSEC-validated), HTTPS and the TLSA answer happen here, once.
"$bin" b "$lib" enforce.test mx.enforce.test "$chain" || { echo "filling the store failed" >&2; exit 1; }
sed -i 's|^nameservers = .*|nameservers = ["127.0.0.1:9"]|' "$config"
if [ -n "${SERVE:-}" ]; then
  printf '\n[serve]\ncheck_socket = "%s"\nrefresh_interval_s = 0\n' "$tmp/check.sock" >> "$config"
  # The deliveries' own store does not exist: one that judged its check itself would find no
  # policy (and DNS answers nothing), so it would not get its `pass`, and the bench would stop.
  # serve is given the filled store with --cache.
  sed -i "s|^path = .*|path = \"$tmp/no-such-directory/store.sqlite\"|" "$config"
  HOLD=1
fi
bundle=/etc/ssl/certs/ca-certificates.crt
case_c=()
if [ -r "$bundle" ]; then
  cat "$bundle" "$tmp/fx/ca.pem" > "$tmp/roots.pem"
  sed "s|^ca_file = .*|ca_file = \"$tmp/roots.pem\"|" "$config" > "$tmp/c.toml"
  echo "(c): $(grep -c 'BEGIN CERTIFICATE' "$tmp/roots.pem") roots in ca_file"
  case_c=("$tmp/c.toml")
fi
if [ -n "${SERVE:-}" ]; then
  # (c)'s configuration is another file (another ca_file): serve, which runs the first one,
  # refuses its calls (their configurations' identities differ) and (c) would judge itself,
  # without a store. Not run.
  case_c=()
  echo "(c): not run with SERVE=1 (another configuration than serve's)"
fi
if [ -n "${FLOOR:-}" ]; then
  # Case (c) becomes what a delivery costs without SQLite: the policy pinned by an override in
  # the configuration, `[cache] path = "memory"`, no DANE; the chain is validated (nothing can
  # be remembered without a store). What a store read without SQLite could come down to.
  printf 'version: STSv1\nmode: enforce\nmx: mx.enforce.test\nmax_age: 604800\n' > "$tmp/pinned.txt"
  sed -e '/^trust_anchor/d' -e 's|^path = .*|path = "memory"|' -e 's|^dnssec = .*|dnssec = "off"|' \
    "$config" > "$tmp/floor.toml"
  printf '\n[override."enforce.test"]\npolicy = "%s"\n' "$tmp/pinned.txt" >> "$tmp/floor.toml"
  case_c=("$tmp/floor.toml")
  echo "(c): FLOOR=1, no store, the policy pinned in the configuration, no DANE"
fi
for _ in $(seq "${AGE:-0}"); do
  "$bin" b "$lib" enforce.test mx.enforce.test "$chain" || { echo "ageing the store failed" >&2; exit 1; }
done
[ "${AGE:-0}" = 0 ] || echo "store aged by $AGE deliveries: write-ahead log $(stat -c %s "$tmp/store.sqlite-wal") bytes"
sessions() {
  sqlite3 "$tmp/store.sqlite" "SELECT coalesce(sum(sessions), 0) FROM tlsrpt_counts WHERE domain = 'enforce.test' AND failure = ''"
}
if [ -n "${HOLD:-}" ]; then
  # `mtasts serve` runs beside the deliveries on the same store, as README "Exim" suggests: with
  # the store open in another process, a delivery finds the log's index in shared memory
  # instead of rebuilding it from the whole log (the first process to open a store does that).
  cargo build -q --release --bin mtasts
  target/release/mtasts serve --config "$config" --listen "unix:$tmp/serve.sock" \
    ${SERVE:+--cache "$tmp/store.sqlite"} 2> "$tmp/serve.log" &
  holder=$!
  trap 'kill $holder 2>/dev/null || true; exec 3>&-; kill $fixture 2>/dev/null || true; rm -rf "$tmp"' EXIT
  for _ in $(seq 100); do [ -S "$tmp/serve.sock" ] && break; sleep 0.05; done
  [ -S "$tmp/serve.sock" ] || { cat "$tmp/serve.log" >&2; echo "mtasts serve did not start" >&2; exit 1; }
  [ -z "${SERVE:-}" ] || [ -S "$tmp/check.sock" ] || { echo "mtasts serve has no check socket" >&2; exit 1; }
  ls -l /proc/$holder/fd 2>/dev/null | grep -q 'store.sqlite$' ||
    { echo "mtasts serve does not hold the store open" >&2; exit 1; }
  echo "mtasts serve (process $holder) holds the store open"
fi
before=$(sessions)
if [ -n "${SERVE:-}" ]; then
  read -r -a st < "/proc/$holder/stat"
  serve_cpu0=$(( (st[13] + st[14]) * 1000000 / $(getconf CLK_TCK) ))
fi
"$bin" bench "$n" "$lib" enforce.test mx.enforce.test "$chain" "${case_c[@]}"
check_counts() {
  if [ -n "${SERVE:-}" ]; then
    # serve counted the sessions; it writes them when it stops. Its CPU time per delivery is
    # what the deliveries handed it.
    read -r -a st < "/proc/$holder/stat"
    serve_cpu=$(( (st[13] + st[14]) * 1000000 / $(getconf CLK_TCK) ))
    echo "mtasts serve: $(( (serve_cpu - serve_cpu0) / want )) us CPU per delivery it judged ($want)"
    kill -TERM "$holder"
    wait "$holder" || true
  fi
  echo "write-ahead log: $(stat -c %s "$tmp/store.sqlite-wal" 2>/dev/null || echo 0) bytes"
  after=$(sessions)
  if [ "$((after - before))" -ne "$want" ]; then
    echo "sessions counted: $((after - before)), want $want: counts were lost" >&2
    [ -z "${SERVE:-}" ] || tail -20 "$tmp/serve.log" >&2
    exit 1
  fi
  echo "every (b)${case_c:+ and (c)}${FLOOR:+ (not (c): no store)} session counted in the store: $((after - before))"
}
# The bench runs one warm-up process of (b) and of (c), and N measured ones of each.
want=$(( (n + 1) * (1 + ${#case_c[@]}) ))
[ -z "${FLOOR:-}" ] || want=$((n + 1))
# With SERVE=1 the counts are read when serve stops, at the end (after the profiles below, whose
# deliveries are added to the sessions wanted).
[ -n "${SERVE:-}" ] || check_counts
if [ -n "${STRACE:-}" ]; then
  want=$((want + 2))
  echo "---- strace -f -c of one (b) process"
  strace -f -c -o "$tmp/strace.txt" "$bin" b "$lib" enforce.test mx.enforce.test "$chain"
  cat "$tmp/strace.txt"
  echo "---- the fsync-like calls and writes to the store of one (b) process, with their durations"
  strace -f -T -e trace=fsync,fdatasync,sync_file_range,pwrite64,openat -o "$tmp/strace-t.txt" \
    "$bin" b "$lib" enforce.test mx.enforce.test "$chain"
  grep -v ENOENT "$tmp/strace-t.txt" | grep -E 'sqlite|sync|pwrite|mtasts' || true
fi
if [ -n "${STAT:-}" ]; then
  want=$((want + 105))
  # Counts that do not stretch with the machine's load as times do, to compare builds while
  # other work shares the cores: the page faults of 100 (a) and 100 (b) processes (`perf stat`),
  # and the user-space instructions of 5 processes of each (valgrind's callgrind, the median).
  for c in a b; do
    if [ $c = a ]; then args=(a "$lib" "$chain"); else args=(b "$lib" enforce.test mx.enforce.test "$chain"); fi
    perf stat -x, -e page-faults -o "$tmp/stat-$c.txt" -- bash -c \
      'for _ in $(seq 100); do "$@" || exit 1; done' _ "$bin" "${args[@]}"
    faults=$(awk -F, '/page-faults/ { print $1 }' "$tmp/stat-$c.txt")
    irs=()
    for i in 1 2 3 4 5; do
      valgrind --tool=callgrind --callgrind-out-file="$tmp/cg-$c.$i" "$bin" "${args[@]}" 2> "$tmp/cg-$c.log" ||
        { cat "$tmp/cg-$c.log" >&2; exit 1; }
      irs+=("$(sed -n 's/^summary: //p' "$tmp/cg-$c.$i")")
    done
    ir=$(printf '%s\n' "${irs[@]}" | sort -n | sed -n 3p)
    echo "  ($c) page faults per process: $((faults / 100)); instructions (user space, median of 5): $ir"
    [ -z "${CG_OUT:-}" ] || cp "$tmp/cg-$c.3" "$CG_OUT.$c"
  done
fi
if [ -n "${PERF:-}" ]; then
  want=$((want + 200))
  out=${PERF_OUT:-/tmp/proc-delivery.perf}
  perf record -q -F 20000 -g -o "$out" -- bash -c \
    'for _ in $(seq 200); do "$0" b "$1" enforce.test mx.enforce.test "$2" || exit 1; done' "$bin" "$lib" "$chain"
  echo "profile in $out (perf report -i $out --no-children --comm proc_delivery)"
fi
[ -z "${SERVE:-}" ] || check_counts
