#!/usr/bin/env bash
# The Debian package as an operator meets it (run as root, on a Debian 12 machine; .ci/run):
#
#   1. `make deb` from the release build, `lintian` (no errors), the package's contents;
#   2. `apt-get install ./mtasts_*.deb`: the _mtasts user, the mtasts group, /var/lib/mtasts
#      (2775 _mtasts:mtasts), the library in ld.so.cache, nothing enabled or started;
#   3. `mtasts check` against the local fixtures (target/debug/mtasts-fixture);
#   4. `mtasts serve` as _mtasts:mtasts with the packaged unit's ExecStart, its umask, and the
#      packaged /etc/mtasts/mtasts.toml pointed at the fixtures: a socketmap lookup, then SIGTERM;
#   5. examples/c/deliver.c compiled with `pkg-config --cflags --libs mtasts` against the
#      installed files, run against the fixtures;
#   6. `apt-get remove` keeps the store and the edited conffile; `apt-get purge` removes both.
#
# Prints `N passed, N failed` and exits 1 when a check failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive
target=${CARGO_TARGET_DIR:-target}

section() { printf '\n== %s\n' "$*"; }
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}

[[ $(id -u) == 0 ]] || { echo "tests/pkg/deb.sh installs a package: run it as root"; exit 2; }
for p in lintian gcc pkg-config; do
    command -v "$p" >/dev/null || { echo "tests/pkg/deb.sh needs $p"; exit 2; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mtasts-deb-test.XXXXXX")
fixture_pid= serve_pid=
cleanup() {
    [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null || true
    [[ -n $fixture_pid ]] && kill "$fixture_pid" 2>/dev/null || true
    # Never leave the package behind for the next suite.
    if dpkg-query -W -f='${Status}' mtasts 2>/dev/null | grep -q 'installed\|config-files'; then
        apt-get purge -y -q mtasts >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# A package left by an earlier run that stopped halfway would hide what this one installs.
if dpkg-query -W -f='${Status}' mtasts 2>/dev/null | grep -q 'installed\|config-files'; then
    section "purging an mtasts package left installed"
    apt-get purge -y -q mtasts
fi

# ---- 1. build and lint ------------------------------------------------------------------------
section "make deb"
make --no-print-directory deb DEB_DIR="$tmp/out"
deb=$(ls "$tmp"/out/mtasts_*.deb)
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb" >"$tmp/contents"
cat "$tmp/contents"
version=$(dpkg-deb --field "$deb" Version)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
for path in ./usr/bin/mtasts "./usr/lib/$multiarch/libmtasts.so.$version" \
    "./usr/lib/$multiarch/libmtasts.so.0" "./usr/lib/$multiarch/libmtasts.so" \
    "./usr/lib/$multiarch/pkgconfig/mtasts.pc" ./usr/include/mtasts.h ./etc/mtasts/mtasts.toml \
    ./lib/systemd/system/mtasts-serve.service ./lib/systemd/system/mtasts-serve.socket \
    ./lib/systemd/system/mtasts-refresh.service ./lib/systemd/system/mtasts-refresh.timer \
    ./usr/share/man/man1/mtasts.1.gz ./usr/share/man/man1/mtasts-serve.1.gz \
    ./usr/share/man/man1/mtasts-cache-list.1.gz ./usr/share/doc/mtasts/README.Debian \
    ./usr/share/doc/mtasts/copyright ./usr/share/doc/mtasts/changelog.Debian.gz \
    ./usr/share/doc/mtasts/examples/exim/exim-mtasts.conf \
    ./usr/share/doc/mtasts/examples/postfix/main.cf; do
    check "the package holds $path" grep -q " $path\( ->\|$\)" "$tmp/contents"
done
check "/etc/mtasts/mtasts.toml is a conffile" \
    bash -c "dpkg-deb --ctrl-tarfile '$deb' | tar -xOf - ./conffiles | grep -qx /etc/mtasts/mtasts.toml"
# A binary that needs more than glibc and libgcc_s would need more in Depends.
dpkg-deb -x "$deb" "$tmp/unpacked"
needed=$(readelf -d "$tmp/unpacked/usr/bin/mtasts" "$tmp/unpacked/usr/lib/$multiarch/libmtasts.so.$version" |
    sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u | tr '\n' ' ')
echo "NEEDED: $needed"
check "the binary and library need only glibc and libgcc_s (the Depends field)" \
    bash -c "! grep -qvE '^(libc\.so\.6|libm\.so\.6|libgcc_s\.so\.1|ld-linux-x86-64\.so\.2|libdl\.so\.2|libpthread\.so\.0)$' < <(tr ' ' '\n' <<<'$needed' | sed '/^$/d')"
check "the library's SONAME is libmtasts.so.0" \
    bash -c "readelf -d '$tmp/unpacked/usr/lib/$multiarch/libmtasts.so.$version' | grep -q 'Library soname: \[libmtasts.so.0\]'"
check "the man page of serve was generated from the CLI (it names --listen)" \
    bash -c "zcat '$tmp/unpacked/usr/share/man/man1/mtasts-serve.1.gz' | grep -q 'listen'"

section "lintian"
# --fail-on error: warnings and notes are printed, errors fail the run.
if lintian --fail-on error --allow-root --no-tag-display-limit --info "$deb" >"$tmp/lintian" 2>&1; then
    ok "lintian reports no error"
else
    bad "lintian reports errors"
fi
cat "$tmp/lintian"

# ---- 2. install -------------------------------------------------------------------------------
section "apt-get install $deb"
cp "$deb" "$tmp/install.deb"
(cd "$tmp/out" && apt-get install -y -q "./$(basename "$deb")")
check "dpkg says mtasts $version is installed" \
    bash -c "[[ \$(dpkg-query -W -f='\${Status} \${Version}' mtasts) == 'install ok installed $version' ]]"
check "the system user _mtasts exists, in the group mtasts" \
    bash -c "id -nG _mtasts | grep -qw mtasts && [[ \$(getent passwd _mtasts | cut -d: -f7) == /usr/sbin/nologin ]]"
check "/var/lib/mtasts is _mtasts:mtasts, mode 2775" \
    bash -c "[[ \$(stat -c '%U:%G %a' /var/lib/mtasts) == '_mtasts:mtasts 2775' ]]"
check "ldconfig knows libmtasts.so.0" bash -c "ldconfig -p | grep -q 'libmtasts.so.0 '"
check "mtasts --version says $version" bash -c "[[ \$(mtasts --version) == 'mtasts $version' ]]"
check "no mtasts unit is enabled" \
    bash -c "! find /etc/systemd/system -name 'mtasts*' | grep -q ."
# (By executable, not by name: other suites on the machine may run their own build's mtasts.)
check "no process of /usr/bin/mtasts was started" \
    bash -c "! for p in /proc/[0-9]*; do readlink \"\$p/exe\"; done 2>/dev/null | grep -qx /usr/bin/mtasts"
check "the packaged configuration loads (all defaults)" \
    bash -c "mtasts cache list --config /etc/mtasts/mtasts.toml --cache '$tmp/empty.sqlite' | grep -qx '0 domain(s) in $tmp/empty.sqlite'"

# ---- 3. mtasts check against the fixtures ----------------------------------------------------
section "fixture"
fixture=$tmp/fixture
mkfifo "$tmp/stdin"
"$target/debug/mtasts-fixture" "$fixture" <"$tmp/stdin" >"$tmp/fixture.json" 2>"$tmp/fixture.err" &
fixture_pid=$!
exec 9>"$tmp/stdin"
for _ in $(seq 100); do
    [[ -s $tmp/fixture.json ]] && break
    kill -0 "$fixture_pid" 2>/dev/null || break
    sleep 0.1
done
grep -q '"config"' "$tmp/fixture.json" || { echo "the fixture did not start:"; cat "$tmp/fixture.err"; exit 1; }
config=$(sed -n 's/.*"config":"\([^"]*\)".*/\1/p' "$tmp/fixture.json")
# _mtasts reads the fixture's trust anchor and CA file.
chmod 0755 "$tmp" "$fixture"

section "mtasts check (installed binary)"
out=$(/usr/bin/mtasts check enforce.test --mx mx.enforce.test --mx evil.test --config "$config" --json)
echo "$out"
check "check enforce.test: mode enforce, mx.enforce.test passes, evil.test fails enforce" \
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); v={m["host"]:m["verdict"] for m in r["mx"]}; sys.exit(0 if v=={"mx.enforce.test":"pass","evil.test":"fail-enforce"} else 1)' "$out"

# ---- 4. mtasts serve as the packaged unit runs it ----------------------------------------------
section "mtasts serve as _mtasts, with the packaged unit's command line"
unit=/lib/systemd/system/mtasts-serve.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
user=$(sed -n 's/^User=//p' "$unit")
group=$(sed -n 's/^Group=//p' "$unit")
umask_unit=$(sed -n 's/^UMask=//p' "$unit")
echo "ExecStart=$exec_start User=$user Group=$group UMask=$umask_unit"
check "the unit runs /usr/bin/mtasts serve --config /etc/mtasts/mtasts.toml as _mtasts:mtasts" \
    test "$exec_start|$user|$group" = "/usr/bin/mtasts serve --config /etc/mtasts/mtasts.toml|_mtasts|mtasts"
# The operator edits the conffile: the fixtures' settings, the packaged store, a free port.
sed -e 's|^path = "memory"$|path = "/var/lib/mtasts/policies.sqlite"|' "$config" >/etc/mtasts/mtasts.toml
printf '\n[serve]\nlisten = "inet:127.0.0.1:0"\n' >>/etc/mtasts/mtasts.toml
# shellcheck disable=SC2086 # ExecStart is split into words as systemd does (no quoting in it)
(umask "$umask_unit" && exec setpriv --reuid="$user" --regid="$group" --init-groups \
    --no-new-privs -- $exec_start) >"$tmp/serve.out" 2>"$tmp/serve.err" &
serve_pid=$!
port=
for _ in $(seq 100); do
    port=$(sed -n 's/^listening on inet:127.0.0.1:\([0-9]*\)$/\1/p' "$tmp/serve.out")
    [[ -n $port ]] && break
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $port ]]; then
    bad "mtasts serve started"
    cat "$tmp/serve.out" "$tmp/serve.err"
else
    ok "mtasts serve started (port $port)"
    check "it runs as _mtasts" bash -c "[[ \$(ps -o user= -p $serve_pid) == _mtasts ]]"
    reply=$(python3 - "$port" <<'PY'
import socket, sys
query = b"postfix enforce.test"
with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as s:
    s.sendall(str(len(query)).encode() + b":" + query + b",")
    data = b""
    while not data.endswith(b","):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
length, _, rest = data.partition(b":")
print(rest[: int(length)].decode())
PY
)
    echo "socketmap postfix enforce.test -> $reply"
    check "socketmap lookup of enforce.test answers secure" \
        test "$reply" = "OK secure match=mx.enforce.test:.backup.enforce.test servername=hostname"
    kill -TERM "$serve_pid"
    rc=0
    wait "$serve_pid" || rc=$?
    serve_pid=
    check "SIGTERM stops it with status 0" test "$rc" = 0
    # After the stop: the server has written what it had to write.
    ls -la /var/lib/mtasts
    check "the store was created in /var/lib/mtasts, _mtasts:mtasts, group-writable" \
        bash -c "[[ \$(stat -c '%U:%G' /var/lib/mtasts/policies.sqlite) == _mtasts:mtasts ]] && (( 0\$(stat -c '%a' /var/lib/mtasts/policies.sqlite) & 020 ))"
fi

# ---- 5. a C program built with pkg-config -----------------------------------------------------
section "examples/c/deliver.c with pkg-config --cflags --libs mtasts"
flags=$(pkg-config --cflags --libs mtasts)
echo "pkg-config: $flags"
check "pkg-config --modversion mtasts is $version" test "$(pkg-config --modversion mtasts)" = "$version"
# shellcheck disable=SC2086 # pkg-config output is meant to be split
if gcc -std=c99 -Wall -Wextra -Werror -o "$tmp/deliver" examples/c/deliver.c $flags; then
    ok "deliver.c compiles and links against the installed library"
    check "deliver records NEEDED libmtasts.so.0" \
        bash -c "readelf -d '$tmp/deliver' | grep -q 'NEEDED.*\[libmtasts.so.0\]'"
    out=$(MTASTS_CONFIG=$config "$tmp/deliver" enforce.test "$fixture/mx-enforce.der" mx.enforce.test) || true
    echo "$out"
    check "deliver (installed library) delivers to mx.enforce.test" grep -qx '=> deliver to mx.enforce.test' <<<"$out"
else
    bad "deliver.c compiles and links against the installed library"
fi

# ---- 6. remove, purge -------------------------------------------------------------------------
section "apt-get remove mtasts"
apt-get remove -y -q mtasts
check "the binary and the library are gone" \
    bash -c "[[ ! -e /usr/bin/mtasts && ! -e /usr/lib/$multiarch/libmtasts.so.0 && ! -e /usr/include/mtasts.h ]]"
check "ldconfig no longer lists libmtasts" bash -c "! ldconfig -p | grep -q libmtasts"
check "remove keeps the store" test -f /var/lib/mtasts/policies.sqlite
check "remove keeps the edited conffile" grep -q 'inet:127.0.0.1:0' /etc/mtasts/mtasts.toml
check "the units are gone" bash -c "! ls /lib/systemd/system/mtasts* 2>/dev/null | grep -q ."

section "apt-get purge mtasts"
apt-get purge -y -q mtasts
check "purge removes the store" test ! -e /var/lib/mtasts
check "purge removes /etc/mtasts" test ! -e /etc/mtasts
check "dpkg no longer knows mtasts" bash -c "! dpkg-query -W -f='\${Status}' mtasts 2>/dev/null | grep -q 'installed\|config-files'"
check "purge keeps the _mtasts user and the mtasts group (README.Debian)" \
    bash -c "getent passwd _mtasts >/dev/null && getent group mtasts >/dev/null"

echo
echo "deb: $pass passed, $fail failed"
[[ $fail == 0 ]]
