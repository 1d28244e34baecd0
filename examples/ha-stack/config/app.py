"""The application server of examples/ha-stack (3 replicas).

A small JSON API over PostgreSQL, stdlib HTTP server plus psycopg2:
  POST /api/items        {"key": K, "value": V} -> 201 once the row is committed
  GET  /api/items/K      -> 200 {"key": K, "value": V}, or 404
  GET  /healthz          -> 200 while the process serves (not a DB check: a database
                            failover must not make swarm restart every app task)
libpq is given both database nodes with target_session_attrs=read-write: it connects to
whichever is the primary now, so a promotion needs no configuration change. A write
is acknowledged (201) only after COMMIT returned, and the primary commits only once the
synchronous standby has the WAL: an acknowledged write survives losing either board.
Writes carry a client key (ON CONFLICT DO NOTHING), so a retried request never inserts
twice.

The node names are looked up by the app, each with a 1 s bound, and handed to libpq as
addresses (hostaddr): once swarm drops a lost board's task from its DNS, swarm's DNS
server passes the name on to the board's upstream resolvers, and when those cannot be
reached (an isolated cluster) each lookup takes ~10 s; libpq would wait that long on
every new connection before it tried the promoted node.
"""

import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2

DB_HOSTS = [h for h in os.environ.get("HA_DB_HOSTS", "db-a,db-b").split(",") if h]
DB_PORT = int(os.environ.get("HA_DB_PORT", "5432"))
DSN = os.environ.get(
    "HA_DB_DSN",
    "dbname=app user=postgres target_session_attrs=read-write connect_timeout=2 "
    # A board that lost power sends no reset: without these a pooled connection to it
    # would hang for the kernel's retransmission timeout (minutes).
    "keepalives=1 keepalives_idle=5 keepalives_interval=2 keepalives_count=2 "
    "tcp_user_timeout=5000",
)
LOOKUP_SECONDS = 1.0
SCHEMA = "CREATE TABLE IF NOT EXISTS items (key text PRIMARY KEY, value text NOT NULL)"
# The table is created once per process (it is replicated, so a promoted standby has it).
SCHEMA_DONE = False
# Connections are kept across requests (opening one costs a round of the host list):
# at most MAX_IDLE idle ones, at most MAX_OPEN open at once.
MAX_IDLE = 8
MAX_OPEN = 16
POOL_LOCK = threading.Lock()
IDLE = []
OPEN = 0
# The node that was primary at the last connection is tried first.
LAST_PRIMARY = None


def lookup(hosts):
    """[(name, IPv4 address)] of the hosts whose lookup answered within LOOKUP_SECONDS,
    in the given order. Lookups run at once, each in its own thread; one that hangs
    ends by itself (resolver timeout) and is not waited for."""
    found = {}

    def look(h):
        try:
            found[h] = socket.getaddrinfo(h, DB_PORT, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        except OSError:
            pass

    threads = [threading.Thread(target=look, args=(h,), daemon=True) for h in hosts]
    for t in threads:
        t.start()
    end = time.monotonic() + LOOKUP_SECONDS
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    done = dict(found)
    return [(h, done[h]) for h in hosts if h in done]


def connect():
    global LAST_PRIMARY
    hosts = sorted(DB_HOSTS, key=lambda h: h != LAST_PRIMARY)
    nodes = lookup(hosts)
    if not nodes:
        raise psycopg2.OperationalError("no database node name resolved (%s)" % ",".join(hosts))
    conn = psycopg2.connect(
        "%s host=%s hostaddr=%s port=%d" % (DSN, ",".join(h for h, _ in nodes), ",".join(a for _, a in nodes), DB_PORT))
    LAST_PRIMARY = conn.info.host
    return conn


def getconn():
    global OPEN
    with POOL_LOCK:
        if IDLE:
            return IDLE.pop()
        if OPEN >= MAX_OPEN:
            raise psycopg2.OperationalError("%d database connections in use" % OPEN)
        OPEN += 1
    try:
        return connect()
    except BaseException:
        with POOL_LOCK:
            OPEN -= 1
        raise


def putconn(conn, close=False):
    global OPEN
    if not close and not conn.closed:
        with POOL_LOCK:
            if len(IDLE) < MAX_IDLE:
                IDLE.append(conn)
                return
    try:
        conn.close()
    finally:
        with POOL_LOCK:
            OPEN -= 1


def run(query, args, fetch):
    """Runs one transaction; after a lost connection (failover) retries once on a new one."""
    global SCHEMA_DONE
    for attempt in (1, 2):
        conn = None
        try:
            conn = getconn()
            if not SCHEMA_DONE:
                with conn, conn.cursor() as cur:
                    cur.execute(SCHEMA)
                SCHEMA_DONE = True
            with conn, conn.cursor() as cur:
                cur.execute(query, args)
                row = cur.fetchone() if fetch else None
            putconn(conn)
            return row
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if conn is not None:
                putconn(conn, close=True)
            if attempt == 2:
                raise
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            return self.reply(200, {"ok": True})
        if not self.path.startswith("/api/items/"):
            return self.reply(404, {"error": "no such path"})
        key = self.path[len("/api/items/"):]
        try:
            row = run("SELECT value FROM items WHERE key = %s", (key,), True)
        except psycopg2.Error as e:
            return self.reply(503, {"error": "database unavailable: %s" % e})
        if row is None:
            return self.reply(404, {"error": "no item %s" % key})
        return self.reply(200, {"key": key, "value": row[0]})

    def do_POST(self):
        if self.path != "/api/items":
            return self.reply(404, {"error": "no such path"})
        try:
            n = int(self.headers.get("Content-Length", "0"))
            item = json.loads(self.rfile.read(n))
            key, value = str(item["key"]), str(item["value"])
        except (ValueError, KeyError, TypeError) as e:
            return self.reply(400, {"error": "body must be {\"key\", \"value\"}: %s" % e})
        try:
            run(
                "INSERT INTO items (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                (key, value),
                False,
            )
        except psycopg2.Error as e:
            return self.reply(503, {"error": "database unavailable: %s" % e})
        return self.reply(201, {"key": key})

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("HA_APP_PORT", "8000"))), Handler).serve_forever()
