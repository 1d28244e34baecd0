"""The application server of examples/ha-stack (3 replicas).

A small JSON API over PostgreSQL, stdlib HTTP server plus psycopg2:
  POST /api/items        {"key": K, "value": V} -> 201 once the row is committed
  GET  /api/items/K      -> 200 {"key": K, "value": V}, or 404
  GET  /healthz          -> 200 while the process serves (not a DB check: a database
                            failover must not make swarm restart every app task)
The DSN lists both database nodes with target_session_attrs=read-write: libpq connects
to whichever is the primary now, so a promotion needs no configuration change. A write
is acknowledged (201) only after COMMIT returned, and the primary commits only once the
synchronous standby has the WAL: an acknowledged write survives losing either board.
Writes carry a client key (ON CONFLICT DO NOTHING), so a retried request never inserts
twice.
"""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import psycopg2.pool

DSN = os.environ.get(
    "HA_DB_DSN",
    "host=db-a,db-b port=5432 dbname=app user=postgres "
    "target_session_attrs=read-write connect_timeout=2 "
    # A board that lost power sends no reset: without these a pooled connection to it
    # would hang for the kernel's retransmission timeout (minutes).
    "keepalives=1 keepalives_idle=5 keepalives_interval=2 keepalives_count=2 "
    "tcp_user_timeout=5000",
)
SCHEMA = "CREATE TABLE IF NOT EXISTS items (key text PRIMARY KEY, value text NOT NULL)"
# Connections are kept across requests: opening one costs a round of libpq's host list
# (after a failover, first the lost node's connect_timeout), so each request must not.
POOL = None
POOL_LOCK = threading.Lock()
# The table is created once per process (it is replicated, so a promoted standby has it).
SCHEMA_DONE = False


def pool():
    global POOL
    with POOL_LOCK:
        if POOL is None:
            POOL = psycopg2.pool.ThreadedConnectionPool(0, 8, DSN)
        return POOL


def run(query, args, fetch):
    """Runs one transaction; after a lost connection (failover) retries once on a new one."""
    global SCHEMA_DONE
    for attempt in (1, 2):
        conn = None
        try:
            conn = pool().getconn()
            if not SCHEMA_DONE:
                with conn, conn.cursor() as cur:
                    cur.execute(SCHEMA)
                SCHEMA_DONE = True
            with conn, conn.cursor() as cur:
                cur.execute(query, args)
                row = cur.fetchone() if fetch else None
            pool().putconn(conn)
            return row
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if conn is not None:
                pool().putconn(conn, close=True)
            if attempt == 2:
                raise
        except psycopg2.pool.PoolError as e:
            raise psycopg2.OperationalError("connection pool exhausted: %s" % e)
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
