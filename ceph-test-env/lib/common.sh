# Shared settings and helpers for ceph-test-env/up and ceph-test-env/down (sourced, not run).
# Every address, port and size can be overridden from the environment.
ENV_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=$(cd "$ENV_DIR/.." && pwd)
RUN=${FASTSNAP_TEST_RUN_DIR:-$ENV_DIR/run}
VENV=${FASTSNAP_VENV:-$ROOT/.venv}
CEPH_A_IP=${FASTSNAP_TEST_CEPH_A_IP:-127.0.0.11}
CEPH_B_IP=${FASTSNAP_TEST_CEPH_B_IP:-127.0.0.12}
PG_PORT=${FASTSNAP_TEST_PG_PORT:-55432}
KEYSTONE_BIND=${FASTSNAP_TEST_KEYSTONE_BIND:-127.0.0.1:35357}
GLANCE_BIND=${FASTSNAP_TEST_GLANCE_BIND:-127.0.0.1:39292}
KEYSTONE_URL=http://$KEYSTONE_BIND/v3
GLANCE_URL=http://$GLANCE_BIND
# Test-only credentials: the stack listens on loopback only.
ADMIN_PASSWORD=${FASTSNAP_TEST_ADMIN_PASSWORD:-admin-secret}
SERVICE_PASSWORD=${FASTSNAP_TEST_SERVICE_PASSWORD:-service-secret}
DEMO_PASSWORD=${FASTSNAP_TEST_DEMO_PASSWORD:-demo-secret}
export CEPH_OSD_SIZE=${FASTSNAP_TEST_CEPH_OSD_SIZE:-24G}
export CEPH_OSD_SIZE_REMOTE=${FASTSNAP_TEST_CEPH_OSD_SIZE_REMOTE:-12G}

DEBIAN_PACKAGES=(ceph-mon ceph-osd ceph-mgr ceph-common python3-rados python3-rbd python3-venv
                 postgresql uuid-runtime qemu-utils qemu-block-extra procps curl gawk)

T0=$(date +%s.%N)
elapsed() { awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN { printf "%.1f", a - b }'; }
log() { printf '[%6ss] %s\n' "$(elapsed)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# A pid file whose process runs (a zombie waiting to be reaped does not count).
pid_alive() {
  local p
  [ -f "$1" ] || return 1
  p=$(cat "$1")
  kill -0 "$p" 2>/dev/null || return 1
  ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$p/stat" 2>/dev/null
}

# stop_pidfile FILE NAME: TERM, wait up to 10 s, then KILL.
stop_pidfile() {
  local f=$1 name=$2 p
  [ -f "$f" ] || return 0
  p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then
    log "stopping $name (pid $p)"
    kill "$p" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  fi
  rm -f "$f"
}

# wait_http URL SECONDS NAME LOG
wait_http() {
  local url=$1 secs=$2 name=$3 logf=$4 i
  for i in $(seq 1 $((secs * 5))); do
    curl -s -o /dev/null --max-time 2 "$url" && return 0
    sleep 0.2
  done
  tail -n 30 "$logf" >&2 || true
  die "$name did not answer at $url within ${secs}s (log: $logf)"
}
