#!/usr/bin/env bash
# Runs one fuzz target on the stable toolchain: copies the committed seeds into the (gitignored)
# corpus directory, then runs cargo fuzz with a single build job and a single libFuzzer job.
#
#   fuzz/run.sh txt_record              # 5 minutes (default)
#   fuzz/run.sh policy_body 60          # 60 seconds
#   fuzz/run.sh policy_body 300 -s none # extra cargo-fuzz options after the duration
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: fuzz/run.sh <txt_record|policy_body|socketmap_request> [seconds] [cargo-fuzz options...]}"
secs="${2:-300}"
shift $(( $# < 2 ? $# : 2 ))
mkdir -p "fuzz/corpus/$target"
cp "fuzz/seeds/$target/"* "fuzz/corpus/$target/"
RUSTC_BOOTSTRAP=1 CARGO_BUILD_JOBS=1 cargo fuzz run "$@" "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$secs" -print_final_stats=1
