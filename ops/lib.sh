# Shared shell helpers for ops/run, ops/test and ops/services. Source it; do not run it.
# Everything here works as root (Postgres then runs as the `postgres` user) or as a normal user.

TG_PACKAGES="redis-server libhiredis-dev libpq-dev postgresql libmicrohttpd-dev pkg-config"

tg_say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
tg_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The directory holding Postgres server binaries (initdb, pg_ctl), or empty.
tg_pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)"
}

# Installs what is missing from Debian's packages, with one apt-get update.
tg_install_deps() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  [ -f /usr/include/hiredis/hiredis.h ] || missing+=(libhiredis-dev)
  [ -f /usr/include/postgresql/libpq-fe.h ] || missing+=(libpq-dev)
  [ -f /usr/include/microhttpd.h ] || missing+=(libmicrohttpd-dev)
  [ -n "$(tg_pg_bindir)" ] || missing+=(postgresql)
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  [ ${#missing[@]} -eq 0 ] && return 0
  tg_say "installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq || tg_die "apt-get update failed"
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null || tg_die "apt-get install ${missing[*]} failed"
  # Debian starts services it installs; Tollgate runs its own on its own ports.
}

# Runs a command as the postgres user when we are root (initdb and postgres refuse root).
tg_as_pg() {
  # From /, which the postgres user can always enter (a checkout under /root it cannot).
  if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# tg_start_redis <port> <dir> [extra redis-server args...]
tg_start_redis() {
  local port=$1 dir=$2; shift 2
  mkdir -p "$dir"
  if redis-cli -p "$port" ping >/dev/null 2>&1; then return 0; fi
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "$@" >/dev/null || tg_die "redis-server did not start (see $dir/redis.log)"
  local i
  for i in $(seq 1 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  tg_die "Redis did not answer on port $port (see $dir/redis.log)"
}

tg_stop_redis() {
  local port=$1
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
}

# The folder Postgres really uses for <dir>. As root the server runs as `postgres`, which may not reach a
# checkout under a private home (/root is 0700): then the data lives under /tmp, named after <dir>.
tg_pg_dir() {
  local dir=$1
  if [ "$(id -u)" -eq 0 ]; then
    mkdir -p "$dir"
    if ! runuser -u postgres -- test -x "$dir" 2>/dev/null; then
      echo "/tmp/tollgate-pg-$(printf '%s' "$dir" | md5sum | cut -c1-12)"
      return
    fi
  fi
  echo "$dir"
}

# tg_start_postgres <port> <dir>: initialises the folder on first use, starts the server, creates
# the `tollgate` database. Unix socket lives in the data folder.
tg_start_postgres() {
  local port=$1 dir bin
  dir=$(tg_pg_dir "$2")
  bin=$(tg_pg_bindir) || true
  [ -n "$bin" ] || tg_die "Postgres server binaries not found"
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$dir"; chmod 700 "$dir"; fi
  if [ ! -f "$dir/PG_VERSION" ]; then
    tg_as_pg "$bin/initdb" -D "$dir" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null \
      || tg_die "initdb failed in $dir"
  fi
  if ! tg_as_pg "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    tg_as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/postgres.log" -w -t 30 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=${TG_PG_FSYNC:-on} -c max_connections=300" start >/dev/null \
      || tg_die "Postgres did not start (see $dir/postgres.log)"
  fi
  psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='tollgate'" | grep -q 1 \
    || psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE tollgate" >/dev/null \
    || tg_die "cannot create database tollgate"
}

tg_stop_postgres() {
  local dir bin
  dir=$(tg_pg_dir "$1")
  bin=$(tg_pg_bindir) || true
  [ -f "$dir/PG_VERSION" ] || return 0
  tg_as_pg "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
}
