#!/bin/bash
# The socketmap benchmark: `mtasts serve` beside a do-nothing netstring server and
# postfix-mta-sts-resolver, all on their cached path; writes benches/socketmap/RESULTS.md.
#
#   bash benches/socketmap/run.sh [--seconds 2] [--reps 5] [--conns 1,4,32] [--client-threads 4]
#
# Needs python3 with the venv module (Debian: python3-venv) and PyPI for postfix-mta-sts-resolver
# and uvloop, installed into a virtualenv (${MTASTS_BENCH_VENV:-/var/cache/mtasts-bench/venv},
# created when missing). Builds mtasts in the bench profile (release).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${MTASTS_BENCH_VENV:-/var/cache/mtasts-bench/venv}
if [ ! -x "$VENV/bin/mta-sts-daemon" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet 'postfix-mta-sts-resolver==1.5.1' 'uvloop'
fi
"$VENV/bin/python" -c 'import postfix_mta_sts_resolver, uvloop' \
    || { echo "the virtualenv $VENV lacks postfix-mta-sts-resolver or uvloop"; exit 1; }
exec cargo bench --bench socketmap -- --resolver-python "$VENV/bin/python" \
    --write benches/socketmap/RESULTS.md "$@"
