#!/usr/bin/env python3
"""Steady, bounded HTTP load against examples/ha-stack, for ci/resilience-test.sh.

  ha-load.py run --targets IP:PORT,... --log L.jsonl --acked A.tsv --stop-file F
             [--rate 20] [--max-seconds 900]
      Alternates acknowledged writes (POST /api/items with a fresh key) and reads of
      keys already acknowledged, at --rate requests/s, until F exists or --max-seconds.
      The client knows every board's address (as with a DNS name listing them all: a
      proxy task may run on any board): a connection that cannot be made (refused, or
      not within 1 s) moves to the next address, each address once; a request sent
      that got no answer (--timeout, default 10 s) or a 5xx is sent once more, on the
      next address. Every request is one line of L.jsonl: {t, kind, ok, first_ok,
      status, ms, tries: [[address index, status, ms, sent], ...]}. Every 201 appends "key<TAB>value" to
      A.tsv, flushed before the next request.
  ha-load.py verify --targets ... --acked A.tsv
      Reads back every acknowledged key (3 tries over the addresses); prints how many
      are missing or wrong, exits 1 if any.
  ha-load.py report --log L.jsonl --window NAME:T0:T1 ...
      For each window (epoch seconds): requests, failed (after the retry), failed on
      the first try, failed writes, and the longest time with no acknowledged write
      (from the last ack before or in the window to the next one).
Only the test's own addresses are contacted; every loop is bounded in count and time.
"""

import argparse
import http.client
import json
import os
import random
import sys
import time
import uuid


def request(target, method, path, body, timeout):
    """One HTTP request: (status, body, sent). status 0 = no answer; sent is False when
    the connection itself failed (refused, or not made within 1 s): nothing reached
    that address, so trying another one cannot repeat anything."""
    host, port = target.rsplit(":", 1)
    # 1 s to connect (a proxy on a lost board is skipped quickly), then `timeout` for
    # the answer (a database failover may hold a request for seconds).
    conn = http.client.HTTPConnection(host, int(port), timeout=1.0)
    try:
        try:
            conn.connect()
        except OSError:
            return 0, b"", False
        try:
            conn.sock.settimeout(timeout)
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json", "Connection": "close"}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read(), True
        except (OSError, http.client.HTTPException):
            return 0, b"", True
    finally:
        conn.close()


class Client:
    """A client of a name that lists every board (a proxy task can run on any of them,
    publishing its port in host mode). Like an HTTP client given several addresses for
    one name, it tries the next address when a connection cannot be made (nothing was
    sent: at most once per address), and it sends a request again, once, on the next
    address when the one sent got no answer or a 5xx. A write sent twice carries the
    same client key, which the app inserts at most once."""

    def __init__(self, targets, timeout):
        self.targets = targets
        self.cur = 0
        self.timeout = timeout

    def call(self, method, path, body, good):
        """Returns (status, first_ok, body, tries); moves to the next address on a failure.
        tries: [address index, status, ms, sent] of each try (status 0 = no answer)."""
        first_ok = None
        status, data = 0, b""
        tries = []
        resent = 0
        # Bounded: each address once for connecting, plus one resend.
        for _ in range(len(self.targets) + 1):
            t = time.time()
            status, data, sent = request(self.targets[self.cur], method, path, body, self.timeout)
            tries.append([self.cur, status, int((time.time() - t) * 1000), int(sent)])
            ok = status in good
            if first_ok is None:
                first_ok = ok
            if ok:
                return status, first_ok, data, tries
            self.cur = (self.cur + 1) % len(self.targets)
            if sent:
                resent += 1
                if resent == 2:
                    break
        return status, first_ok, data, tries


def run(a):
    client = Client(a.targets.split(","), a.timeout)
    acked = []
    period = 1.0 / a.rate
    deadline = time.time() + a.max_seconds
    n = 0
    with open(a.log, "a", buffering=1) as log, open(a.acked, "a", buffering=1) as out:
        nxt = time.time()
        while time.time() < deadline and not os.path.exists(a.stop_file):
            t = time.time()
            if n % 2 == 0 or not acked:
                key = uuid.uuid4().hex
                value = "%d-%d" % (n, random.randrange(1 << 30))
                status, first_ok, _, tries = client.call(
                    "POST", "/api/items", {"key": key, "value": value}, (201,))
                ok = status == 201
                if ok:
                    acked.append(key)
                    out.write("%s\t%s\n" % (key, value))
                    out.flush()
                kind = "write"
            else:
                key = random.choice(acked)
                status, first_ok, _, tries = client.call("GET", "/api/items/" + key, None, (200,))
                ok = status == 200
                kind = "read"
            log.write(json.dumps({"t": round(t, 3), "kind": kind, "ok": ok, "first_ok": first_ok,
                                  "status": status, "ms": int((time.time() - t) * 1000),
                                  "tries": tries}) + "\n")
            n += 1
            nxt += period
            pause = nxt - time.time()
            if pause > 0:
                time.sleep(pause)
            else:
                nxt = time.time()
    return 0


def verify(a):
    client = Client(a.targets.split(","), a.timeout)
    total = missing = 0
    with open(a.acked) as f:
        for line in f:
            key, value = line.rstrip("\n").split("\t")
            total += 1
            for _ in range(3):
                status, _, data, _ = client.call("GET", "/api/items/" + key, None, (200, 404))
                if status in (200, 404):
                    break
                time.sleep(0.5)
            try:
                got = json.loads(data).get("value") if status == 200 else None
            except ValueError:
                got = None
            if got != value:
                missing += 1
                if missing <= 5:
                    print("missing or wrong: %s (HTTP %s)" % (key, status), file=sys.stderr)
    print("acknowledged writes: %d, readable: %d, missing: %d" % (total, total - missing, missing))
    return 1 if missing or total == 0 else 0


def report(a):
    rows = [json.loads(x) for x in open(a.log) if x.strip()]
    acked = sorted(r["t"] for r in rows if r["kind"] == "write" and r["ok"])
    print("%-10s %6s %7s %8s %8s %7s %s" % ("window", "reqs", "failed", "fail %", "1st-try", "w-fail", "longest write gap (s)"))
    for w in a.window:
        name, t0, t1 = w.split(":")
        t0, t1 = float(t0), float(t1)
        sel = [r for r in rows if t0 <= r["t"] < t1]
        failed = [r for r in sel if not r["ok"]]
        first = [r for r in sel if not r["first_ok"]]
        wfail = [r for r in failed if r["kind"] == "write"]
        # The longest time without an acknowledged write around the window: from the
        # last ack before it (or in it) to the next one, the client's view of an outage.
        gap = 0.0
        before = [t for t in acked if t < t0]
        inside = [t for t in acked if t0 <= t < t1]
        after = [t for t in acked if t >= t1]
        seq = before[-1:] + inside + after[:1]
        for x, y in zip(seq, seq[1:]):
            gap = max(gap, y - x)
        ratio = 100.0 * len(failed) / len(sel) if sel else 0.0
        print("%-10s %6d %7d %7.2f%% %8d %7d %.1f" % (name, len(sel), len(failed), ratio, len(first), len(wfail), gap))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--targets", required=True)
    r.add_argument("--log", required=True)
    r.add_argument("--acked", required=True)
    r.add_argument("--stop-file", required=True)
    r.add_argument("--rate", type=float, default=20.0)
    r.add_argument("--max-seconds", type=float, default=900.0)
    r.add_argument("--timeout", type=float, default=10.0)
    v = sub.add_parser("verify")
    v.add_argument("--targets", required=True)
    v.add_argument("--acked", required=True)
    v.add_argument("--timeout", type=float, default=10.0)
    s = sub.add_parser("report")
    s.add_argument("--log", required=True)
    s.add_argument("--window", action="append", default=[])
    a = p.parse_args()
    return {"run": run, "verify": verify, "report": report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
