#!/usr/bin/env bash
# A fresh process's first check with everything it needs already in the SQLite store (issue:
# persistent store, performance; issue 12: DANE), as Exim pays it on every delivery (one process
# each). Starts the local fixtures (DNSSEC-signed zones), fills two stores once, then runs the
# `first_check` example N times for each case, alternating, and prints the medians of the time
# from `main` to the verdict, as measured inside the process, and of the wall time of the whole
# process:
#
#   without DANE, name only   [dns] dnssec = "off"; enforce.test's policy in the store;
#                             check_mx (the figure measured before DANE)
#   without DANE, with chain  the same, check with the MX's chain (mx-enforce.der): PKIX
#                             validation of the chain (baseline of the next line)
#   DANE on, no TLSA          [dns] dnssec = "validate"; enforce.test's policy and the stored
#                             "no TLSA records" answer of mx.enforce.test; check with the chain
#                             (MTA-STS decides)
#   with DANE                 [dns] dnssec = "validate"; dane.test's policy AND the TLSA answer
#                             of mx.dane.test in the store; check with the MX's chain
#                             (mx-dane.der), decided by DANE-EE
#
# Before measuring, the configurations are pointed at a DNS server that does not exist
# (127.0.0.1:9): a run that had to look anything up (the TLSA answer not taken from the store)
# would not give "pass dane", and the script stops.
#
# bash benches/first_check.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50}
cargo build -q --release --example first_check -p mtasts
cargo build -q -p mtasts-fixtures
. fixtures/start.sh
start_fixture
config="$tmp/fx/mtasts.toml"
grep -q '^dnssec = "validate"' "$config" || { echo "the fixture's configuration does no DANE" >&2; exit 1; }
off="$tmp/off.toml"
on="$tmp/on.toml"
sed -e "s|^path = \"memory\"|path = \"$tmp/off.sqlite\"|" -e 's|^dnssec = .*|dnssec = "off"|' \
  -e '/^trust_anchor = /d' "$config" > "$off"
sed -e "s|^path = \"memory\"|path = \"$tmp/on.sqlite\"|" "$config" > "$on"
bin=target/release/examples/first_check
chain="$tmp/fx/mx-dane.der"
# Fill the stores (DNS, DNSSEC and HTTPS happen here, once).
[ "$("$bin" "$off" enforce.test mx.enforce.test | cut -d' ' -f2-)" = "pass" ] || { echo "filling the store failed" >&2; exit 1; }
[ "$("$bin" "$on" dane.test mx.dane.test "$chain" | cut -d' ' -f2-)" = "pass dane" ] || { echo "filling the store (DANE) failed" >&2; exit 1; }
[ "$("$bin" "$on" enforce.test mx.enforce.test "$tmp/fx/mx-enforce.der" | cut -d' ' -f2-)" = "pass mta-sts" ] || { echo "filling the store (no TLSA) failed" >&2; exit 1; }
sed -i 's|^nameservers = .*|nameservers = ["127.0.0.1:9"]|' "$off" "$on"

off_inside=(); off_wall=(); offc_inside=(); offc_wall=(); none_inside=(); none_wall=(); on_inside=(); on_wall=()
run() { # run WANT CMD...: prints "inside wall" in microseconds
  local want=$1 t0 t1 out
  shift
  t0=$(date +%s%N)
  out=$("$@")
  t1=$(date +%s%N)
  [ "${out#* }" = "$want" ] || { echo "unexpected verdict: $out (want $want)" >&2; exit 1; }
  echo "${out%% *} $(( (t1 - t0) / 1000 ))"
}
for _ in $(seq "$n"); do
  read -r i w < <(run "pass" "$bin" "$off" enforce.test mx.enforce.test)
  off_inside+=("$i"); off_wall+=("$w")
  read -r i w < <(run "pass mta-sts" "$bin" "$off" enforce.test mx.enforce.test "$tmp/fx/mx-enforce.der")
  offc_inside+=("$i"); offc_wall+=("$w")
  read -r i w < <(run "pass mta-sts" "$bin" "$on" enforce.test mx.enforce.test "$tmp/fx/mx-enforce.der")
  none_inside+=("$i"); none_wall+=("$w")
  read -r i w < <(run "pass dane" "$bin" "$on" dane.test mx.dane.test "$chain")
  on_inside+=("$i"); on_wall+=("$w")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mi_off=$(median "${off_inside[@]}"); mw_off=$(median "${off_wall[@]}")
mi_offc=$(median "${offc_inside[@]}"); mw_offc=$(median "${offc_wall[@]}")
mi_none=$(median "${none_inside[@]}"); mw_none=$(median "${none_wall[@]}")
mi_on=$(median "${on_inside[@]}"); mw_on=$(median "${on_wall[@]}")
echo "first check from a fresh process, everything in SQLite ($n runs each, alternating):"
echo "  without DANE, name only (policy stored, check_mx):             main to verdict median $mi_off us, whole process median $mw_off us"
echo "  without DANE, with chain (policy stored, PKIX check):          main to verdict median $mi_offc us, whole process median $mw_offc us"
echo "  DANE on, MX without TLSA (both answers stored, PKIX check):    main to verdict median $mi_none us, whole process median $mw_none us"
echo "  with DANE (policy and TLSA answer stored, DANE-EE check):      main to verdict median $mi_on us, whole process median $mw_on us"
awk -v a="$mi_on" -v b="$mi_offc" -v c="$mi_off" \
  'BEGIN { printf "  main to verdict, with DANE over without: %.2fx the check with a chain, %.2fx the name-only check\n", a / b, a / c }'
