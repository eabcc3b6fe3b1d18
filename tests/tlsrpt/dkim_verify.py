#!/usr/bin/env python3
"""The independent DKIM check of mailed reports (RPT-12): dkimpy verifies the topmost
DKIM-Signature of a message, fetching the public key over DNS from the test's DNS fixture.

    dkim_verify.py MESSAGE_FILE HOST:PORT

The message (LF or CRLF line ends) is given CRLF line ends, as an MTA sends it, and verified as
an RFC 8460 report (`tlsrpt='strict'`: the key record must carry `s=tlsrpt`, and `l=` is
ignored). Prints JSON: {"verified": bool, "tags": {tag: value} of the signature, "error": str}.
"""
import json
import sys

import dkim
import dns.resolver


def main():
    message_file, server = sys.argv[1], sys.argv[2]
    host, port = server.rsplit(":", 1)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port)

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        answer = resolver.resolve(name, "TXT", lifetime=timeout, tcp=True)
        return b"".join(answer[0].strings)

    raw = open(message_file, "rb").read()
    message = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    d = dkim.DKIM(message, tlsrpt="strict")
    error = ""
    try:
        verified = bool(d.verify(idx=0, dnsfunc=dnsfunc))
    except dkim.DKIMException as e:
        verified, error = False, str(e)
    tags = {}
    for name, value in d.headers:
        if name.lower() == b"dkim-signature":
            for tag in value.decode().split(";"):
                if "=" in tag:
                    k, v = tag.split("=", 1)
                    tags[k.strip()] = "".join(v.split())
            break
    print(json.dumps({"verified": verified, "tags": tags, "error": error}))


if __name__ == "__main__":
    main()
