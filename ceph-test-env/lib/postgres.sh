# PostgreSQL for Keystone and Glance (and Nova, Placement, Neutron: lib/nova.sh) (sourced by up/down).
# A private cluster under $RUN/pg on loopback,
# owned by the 'postgres' system user when running as root (PostgreSQL refuses to run as root).
# In a container it listens on its network (FASTSNAP_TEST_PG_LISTEN) and trusts FASTSNAP_TEST_PG_TRUST_NET.
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
PG_DATA=$RUN/pg/data
PG_SOCK=$RUN/pg/sock
PG_LISTEN=${FASTSNAP_TEST_PG_LISTEN:-$PG_HOST}
PG_TRUST_NET=${FASTSNAP_TEST_PG_TRUST_NET:-}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  [ -n "$PG_BIN" ] || die "PostgreSQL binaries not found"
  mkdir -p "$RUN/pg"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    log "initialising PostgreSQL in $PG_DATA"
    mkdir -p "$PG_DATA" "$PG_SOCK"
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$RUN/pg"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 >"$RUN/pg/initdb.log" 2>&1 \
      || die "initdb failed (log: $RUN/pg/initdb.log)"
    if [ -n "$PG_TRUST_NET" ]; then echo "host all all $PG_TRUST_NET trust" >>"$PG_DATA/pg_hba.conf"; fi
  fi
  if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    log "starting PostgreSQL on $PG_LISTEN:$PG_PORT"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -w -t 60 -l "$RUN/pg/postgres.log" \
      -o "-c listen_addresses=$PG_LISTEN -p $PG_PORT -k $PG_SOCK -c max_connections=200 -c fsync=off" \
      start >/dev/null || die "PostgreSQL did not start (log: $RUN/pg/postgres.log)"
  fi
  pg_ensure_db keystone glance
}

# pg_ensure_db NAME...: create the databases that do not exist yet.
pg_ensure_db() {
  local db
  for db in "$@"; do
    if ! as_pg psql -h "$PG_SOCK" -p "$PG_PORT" -U postgres -tAc "select 1 from pg_database where datname='$db'" | grep -q 1; then
      as_pg psql -h "$PG_SOCK" -p "$PG_PORT" -U postgres -qc "create database $db" >/dev/null
    fi
  done
}

pg_url() { echo "postgresql+psycopg2://postgres@$PG_HOST:$PG_PORT/$1"; }

pg_stop() {
  if [ -n "$PG_BIN" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
    log "stopping PostgreSQL"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
  fi
}
