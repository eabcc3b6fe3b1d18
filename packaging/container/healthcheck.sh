#!/bin/bash
# Container healthcheck of `mtasts serve`: one socketmap lookup over TCP (bash's /dev/tcp, no
# other tool in the image). The key is an address literal, which the server answers `NOTFOUND `
# without any DNS or HTTPS, so the check says whether the server answers, not whether the
# Internet does. Exit 0 when the reply is the netstring `9:NOTFOUND ,`, 1 otherwise.
#
#   healthcheck [HOST:PORT]        (default: $MTASTS_HEALTH_ADDRESS, else 127.0.0.1:8461)
set -u
address=${1:-${MTASTS_HEALTH_ADDRESS:-127.0.0.1:8461}}
host=${address%:*} port=${address##*:}
query='health [192.0.2.1]'
if ! exec 3<>"/dev/tcp/$host/$port"; then
    echo "healthcheck: cannot connect to $address" >&2
    exit 1
fi
printf '%s:%s,' "${#query}" "$query" >&3
reply=
IFS= read -r -t 4 -n 12 -d '' reply <&3 || true
exec 3<&-
if [[ $reply != '9:NOTFOUND ,' ]]; then
    echo "healthcheck: unexpected reply from $address: '$reply'" >&2
    exit 1
fi
