#!/usr/bin/env python3
"""The reference side of the TLSRPT datagram interop test (tests/it/collect.rs).

    reference_collect.py WORKDIR DATAGRAM_DIR SESSIONS

Runs sys4's tlsrpt-reporter (PyPI `tlsrpt-reporter==0.6.0`), the receiver Postfix 3.10's TLSRPT
setup documents, on the datagrams given:

1. starts its `tlsrpt-collectd` daemon on WORKDIR/ref.sock with SQLite storage;
2. sends every file of DATAGRAM_DIR (in name order), one datagram each, to that socket;
3. waits until the collector has committed SESSIONS policy results (sessions x policies);
4. makes it roll its day over (SIGUSR2, the daemon's own development switch, which files today's
   counts under yesterday, the day its fetcher serves), then stops it (SIGTERM);
5. runs its reportd's report creation in this process (check_day, collect_domains through the
   `tlsrpt-fetcher` command, fetch_data, create_reports), which stores each report's JSON in the
   reportd database without sending anything;
6. prints {domain: report JSON} on standard output.

Exits non-zero, with the collector's log, when any step fails.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import time

DEADLINE = 60  # seconds to wait for the daemon at each step (a slow CI machine, not a timing test)


def fail(msg, log=None):
    print(f"reference_collect: {msg}", file=sys.stderr)
    if log and os.path.exists(log):
        with open(log, encoding="utf-8", errors="replace") as f:
            sys.stderr.write(f.read()[-4000:])
    sys.exit(1)


def wait_for(what, test, log):
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        if test():
            return
        time.sleep(0.1)
    fail(f"gave up waiting for {what}", log)


def committed(db):
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            (n,) = con.execute("SELECT COALESCE(SUM(cntrtotal), 0) FROM finalresults").fetchone()
            return n
        finally:
            con.close()
    except sqlite3.Error:
        return -1


def script(name):
    for d in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    fail(f"{name} not found: pip install tlsrpt-reporter==0.6.0")


def main():
    if len(sys.argv) != 4:
        fail("usage: reference_collect.py WORKDIR DATAGRAM_DIR SESSIONS")
    work, dgdir, sessions = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sock = os.path.join(work, "ref.sock")
    db = os.path.join(work, "collectd.sqlite")
    log = os.path.join(work, "collectd.log")

    # 1. The collector daemon.
    collectd = subprocess.Popen(
        [script("tlsrpt-collectd"), f"--storage=sqlite://{db}", f"--socketname={sock}",
         "--sockettimeout=1", "--log_level=debug", f"--logfilename={log}",
         f"--dump_path_for_invalid_datagram={os.path.join(work, 'invalid.dump')}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_for("the collector's socket", lambda: os.path.exists(sock) or collectd.poll() is not None, log)
        if collectd.poll() is not None:
            fail(f"tlsrpt-collectd exited with {collectd.returncode}", log)

        # 2. The datagrams.
        import socket
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        names = sorted(os.listdir(dgdir))
        for name in names:
            with open(os.path.join(dgdir, name), "rb") as f:
                s.sendto(f.read(), sock)
        s.close()

        # 3. All of them committed.
        wait_for(f"{sessions} committed policy results", lambda: committed(db) >= sessions, log)
        if committed(db) != sessions:
            fail(f"the collector committed {committed(db)} policy results, not {sessions}", log)

        # 4. Day roll-over, then stop.
        collectd.send_signal(signal.SIGUSR2)
        wait_for("the day roll-over", lambda: os.path.exists(db + ".yesterday") and os.path.exists(db), log)
        # The roll-over is done once the new database is set up (its dbversion row is written).
        wait_for("the new day's database", lambda: committed(db) == 0, log)
    finally:
        if collectd.poll() is None:
            collectd.send_signal(signal.SIGTERM)
            try:
                collectd.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                collectd.kill()
                fail("tlsrpt-collectd did not stop on SIGTERM", log)

    # 5. The reports, built by reportd's own code, not sent.
    import logging
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    from tlsrpt_reporter import tlsrpt as T
    values = {k: v["default"] for k, v in T.options_reportd.items()}
    values.update(
        dbname=os.path.join(work, "reportd.sqlite"),
        fetchers=f"{script('tlsrpt-fetcher')} --storage=sqlite://{db} --logfilename={os.path.join(work, 'fetcher.log')}",
        organization_name="Test Sender",
        contact_info="tlsrpt@sender.test",
        sender_address="tlsrpt@sender.test",
        spread_out_delivery=1,
        min_wait_domainlist=0, max_wait_domainlist=0,
        min_wait_domaindetails=0, max_wait_domaindetails=0,
    )
    reportd = T.TLSRPTReportd(T.ConfigReportd(**values))
    reportd.check_day()
    time.sleep(0.01)  # its jobs are due strictly after the time they were made
    reportd.collect_domains()
    time.sleep(0.01)
    reportd.fetch_data()
    reportd.create_reports()
    rows = reportd.con.execute("SELECT domain, report FROM reports ORDER BY domain").fetchall()
    if not rows:
        fail("reportd made no report", log)
    out = {}
    for domain, report in rows:
        if domain in out:
            fail(f"two reports for {domain}")
        out[domain] = json.loads(report)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
