#!/bin/bash
# A database node of examples/ha-stack, run by pg_auto_failover's pg_autoctl:
#   db-node.sh monitor   the monitor (pgmon): watches both data nodes and orchestrates
#                        promotion; it holds no application data
#   db-node.sh db-a|db-b a PostgreSQL data node registered with the monitor; the first
#                        one up becomes primary, the other a synchronous standby
# State (PGDATA and pg_autoctl's own config/state) lives on the task's volume at
# /var/lib/ha-stack, so a restarted task resumes as the same node; `create ... --run`
# is used only the first time.
set -euo pipefail
role=${1:?usage: db-node.sh monitor|db-a|db-b}
base=/var/lib/ha-stack
export PGDATA=$base/pgdata
export XDG_CONFIG_HOME=$base/config XDG_DATA_HOME=$base/share HOME=$base
export PATH=/usr/lib/postgresql/15/bin:$PATH
mkdir -p "$base" /run/postgresql
chown -R postgres:postgres "$base" /run/postgresql
# pg_autoctl refuses to run as root.
as_pg() { exec runuser -u postgres -- env PGDATA="$PGDATA" XDG_CONFIG_HOME="$XDG_CONFIG_HOME" \
  XDG_DATA_HOME="$XDG_DATA_HOME" HOME="$HOME" PATH="$PATH" "$@"; }

if [ -f "$XDG_CONFIG_HOME/pg_autoctl$PGDATA/pg_autoctl.cfg" ]; then
  as_pg pg_autoctl run
fi
# trust inside the stack's own overlay network (pg_autoctl allows the subnet of
# --hostname's address only); use --auth scram-sha-256 with a secret on a network you
# share.
common=(--pgdata "$PGDATA" --pgport 5432 --auth trust --no-ssl)
if [ "$role" = monitor ]; then
  as_pg pg_autoctl create monitor "${common[@]}" --hostname pgmon --run
fi
# The monitor may still be starting (or moving): wait for its name, bounded, so the
# first start does not burn swarm's restarts.
for _ in $(seq 1 60); do getent hosts pgmon >/dev/null && break; sleep 2; done
as_pg pg_autoctl create postgres "${common[@]}" --pg-hba-lan --hostname "$role" --name "$role" \
  --dbname app --monitor 'postgres://autoctl_node@pgmon:5432/pg_auto_failover?sslmode=disable' --run
