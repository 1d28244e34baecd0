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

# Replication and app connections come from task addresses that change whenever a task
# restarts or moves, and swarm's reverse DNS does not give back the service name, so
# pg_autoctl's host-name HBA lines never match: allow the stack's own overlay subnet
# (HA_SUBNET, the network's subnet in stack.yml) instead, once pg_hba.conf exists
# (initdb or pg_basebackup), and reload. Bounded: a rebuilt standby copies the
# primary's file, lines included.
subnet=${HA_SUBNET:?HA_SUBNET, the subnet of the stack network, is not set}
pg_do() { runuser -u postgres -- env PGDATA="$PGDATA" XDG_CONFIG_HOME="$XDG_CONFIG_HOME" \
  XDG_DATA_HOME="$XDG_DATA_HOME" HOME="$HOME" PATH="$PATH" "$@"; }
# Failover timing. pg_auto_failover's defaults take about a minute from a lost primary
# to a promoted standby: the monitor marks the node unhealthy only after 20 s without a
# report from its keeper (node_considered_unhealthy_timeout) and failed health checks
# (every 5 s, 5 s timeout, 2 retries 2 s apart), then the standby waits
# primary_demote_timeout (30 s) before it promotes itself. Halved here, keeping the
# order that prevents two primaries: an isolated primary's keeper demotes it after
# network_partition_timeout (10 s, was 20) without the monitor and the standby, and the
# standby is promoted at the earliest 10 + 15 s after the loss (demote timeout 15 s,
# was 30). Acknowledged writes are safe either way: replication is synchronous, so an
# acknowledged commit is on the standby before it is promoted.
tune_monitor() {
  local q=(pg_do psql -h 127.0.0.1 -p 5432 -d pg_auto_failover -qAt)
  [ "$("${q[@]}" -c 'show pgautofailover.primary_demote_timeout' 2>/dev/null)" = 15s ] && return 0
  "${q[@]}" -c "ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = '10s'" \
    -c "ALTER SYSTEM SET pgautofailover.health_check_period = '2s'" \
    -c "ALTER SYSTEM SET pgautofailover.health_check_timeout = '2s'" \
    -c "ALTER SYSTEM SET pgautofailover.primary_demote_timeout = '15s'" \
    -c 'select pg_reload_conf()' >/dev/null 2>&1
}
tune_keeper() {
  [ -f "$XDG_CONFIG_HOME/pg_autoctl$PGDATA/pg_autoctl.cfg" ] || return 1
  [ "$(pg_do pg_autoctl config get --pgdata "$PGDATA" timeout.network_partition_timeout 2>/dev/null)" = 10 ] && return 0
  pg_do pg_autoctl config set --pgdata "$PGDATA" timeout.network_partition_timeout 10 >/dev/null 2>&1 &&
    pg_do pg_autoctl reload --pgdata "$PGDATA" >/dev/null 2>&1
}
(
  for i in $(seq 1 600); do
    if [ -f "$PGDATA/pg_hba.conf" ] && ! grep -q '^# ha-stack network' "$PGDATA/pg_hba.conf"; then
      printf '# ha-stack network\nhost all all %s trust\nhost replication all %s trust\n' "$subnet" "$subnet" >>"$PGDATA/pg_hba.conf"
      runuser -u postgres -- env PATH="$PATH" pg_ctl reload -D "$PGDATA" >/dev/null 2>&1 || true
    fi
    # Checked again every 5 s: pg_autoctl rewrites its own file while it initializes.
    if [ $((i % 5)) = 0 ]; then
      if [ "$role" = monitor ]; then tune_monitor || true; else tune_keeper || true; fi
    fi
    sleep 1
  done
) &
if [ -f "$XDG_CONFIG_HOME/pg_autoctl$PGDATA/pg_autoctl.cfg" ]; then
  as_pg pg_autoctl run
fi
# trust inside the stack's own overlay network only (the HBA lines above); use
# --auth scram-sha-256 with a secret on a network you share.
common=(--pgdata "$PGDATA" --pgport 5432 --auth trust --no-ssl)
if [ "$role" = monitor ]; then
  as_pg pg_autoctl create monitor "${common[@]}" --hostname pgmon --run
fi
# The monitor may still be starting (or moving): wait for its name, bounded, so the
# first start does not burn swarm's restarts.
for _ in $(seq 1 60); do getent hosts pgmon >/dev/null && break; sleep 2; done
as_pg pg_autoctl create postgres "${common[@]}" --pg-hba-lan --hostname "$role" --name "$role" \
  --dbname app --monitor 'postgres://autoctl_node@pgmon:5432/pg_auto_failover?sslmode=disable' --run
