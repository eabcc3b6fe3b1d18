#!/usr/bin/env python3
"""Independent checks for tests/it/tlsrpt.rs: a JSON Schema validator and a MIME parser that are not
mtasts's own code. Uses the standard library and the `jsonschema` package (in the machine image).

    check.py schema SCHEMA FILE...   validate each report (.json, or .json.gz); on failure print
                                     every error and exit 1
    check.py mime FILE               parse one email with the `email` package and print what it
                                     found as JSON (headers, parameters, parts, decoded payloads)
"""

import base64
import email
import email.policy
import email.utils
import gzip
import json
import sys


def schema(schema_path, files):
    import jsonschema

    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    failed = False
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        report = json.loads(data.decode("utf-8"))
        for error in sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path)):
            failed = True
            where = "/".join(str(p) for p in error.absolute_path) or "(top)"
            print(f"{path}: {where}: {error.message}")
    return 1 if failed else 0


def part_summary(part):
    payload = part.get_content()
    out = {
        "content_type": part.get_content_type(),
        "params": {k: v for k, v in (part.get_params() or [])[1:]},
        "charset": part.get_content_charset(),
        "disposition": part.get_content_disposition(),
        "filename": part.get_filename(),
        "transfer_encoding": part.get("Content-Transfer-Encoding"),
        "defects": [type(d).__name__ for d in part.defects],
    }
    if isinstance(payload, str):
        out["text"] = payload
    else:
        out["base64"] = base64.b64encode(payload).decode("ascii")
    return out


def mime(path):
    with open(path, "rb") as f:
        msg = email.message_from_bytes(f.read(), policy=email.policy.default)
    headers = {}
    for name in msg.keys():
        headers.setdefault(name, []).append(str(msg[name]))
    summary = {
        "defects": [type(d).__name__ for d in msg.defects],
        "headers": headers,
        "content_type": msg.get_content_type(),
        "params": {k: v for k, v in msg.get_params()[1:]},
        "from": [a.addr_spec for a in msg["From"].addresses],
        "to": [a.addr_spec for a in msg["To"].addresses],
        "date_unix": int(email.utils.parsedate_to_datetime(str(msg["Date"])).timestamp()),
        "parts": [part_summary(p) for p in msg.iter_parts()],
    }
    json.dump(summary, sys.stdout)
    return 0


def main(argv):
    if len(argv) >= 3 and argv[1] == "schema":
        return schema(argv[2], argv[3:])
    if len(argv) == 3 and argv[1] == "mime":
        return mime(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
