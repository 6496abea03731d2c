# Shared settings and helpers for ceph-test-env/up and ceph-test-env/down (sourced, not run).
# Every address, port and size can be overridden from the environment.
ENV_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=$(cd "$ENV_DIR/.." && pwd)
RUN=${FASTSNAP_TEST_RUN_DIR:-$ENV_DIR/run}
VENV=${FASTSNAP_VENV:-$ROOT/.venv}
CEPH_A_IP=${FASTSNAP_TEST_CEPH_A_IP:-127.0.0.11}
CEPH_B_IP=${FASTSNAP_TEST_CEPH_B_IP:-127.0.0.12}
PG_PORT=${FASTSNAP_TEST_PG_PORT:-55432}
PG_HOST=${FASTSNAP_TEST_PG_HOST:-127.0.0.1}             # where Keystone and Glance find PostgreSQL
KEYSTONE_BIND=${FASTSNAP_TEST_KEYSTONE_BIND:-127.0.0.1:35357}
GLANCE_BIND=${FASTSNAP_TEST_GLANCE_BIND:-127.0.0.1:39292}
# The URLs clients use (catalogue, Glance's self reference); they differ from the binds in containers.
KEYSTONE_URL=${FASTSNAP_TEST_KEYSTONE_PUBLIC_URL:-http://$KEYSTONE_BIND/v3}
GLANCE_URL=${FASTSNAP_TEST_GLANCE_PUBLIC_URL:-http://$GLANCE_BIND}
# fastsnap's REST service in the catalogue (service type "fastsnap", for `openstack fastsnap ...`): the port of the
# stack's fastsnap.conf [service] bind_port, where a test (tests/integration/test_osc.py) or an operator runs it.
FASTSNAP_URL=${FASTSNAP_TEST_SERVICE_PUBLIC_URL:-http://127.0.0.1:${FASTSNAP_TEST_SERVICE_PORT:-38787}}
# Test-only credentials: the stack listens on loopback only.
ADMIN_PASSWORD=${FASTSNAP_TEST_ADMIN_PASSWORD:-admin-secret}
SERVICE_PASSWORD=${FASTSNAP_TEST_SERVICE_PASSWORD:-service-secret}
DEMO_PASSWORD=${FASTSNAP_TEST_DEMO_PASSWORD:-demo-secret}
export CEPH_OSD_SIZE=${FASTSNAP_TEST_CEPH_OSD_SIZE:-24G}
# The Nova compute host (lib/nova.sh), only with FASTSNAP_TEST_NOVA=1 (or `up --nova`).
NOVA=${FASTSNAP_TEST_NOVA:-0}
NOVA_VENV=${FASTSNAP_NOVA_VENV:-$ROOT/.venv-nova}
# The OpenStack release of the Nova part (Nova, Placement, Neutron and their pins: lib/nova-requirements-<release>.txt),
# in that one venv: another release rebuilds it and gives the Nova part fresh databases (lib/nova.sh).
NOVA_RELEASES=(2025.1 2025.2 2026.1 2026.2)
NOVA_RELEASE=${FASTSNAP_TEST_NOVA_RELEASE:-${NOVA_RELEASES[-1]}}
NOVA_REQUIREMENTS=$ENV_DIR/lib/nova-requirements-$NOVA_RELEASE.txt
NOVA_API_BIND=${FASTSNAP_TEST_NOVA_API_BIND:-127.0.0.1:38774}
PLACEMENT_BIND=${FASTSNAP_TEST_PLACEMENT_BIND:-127.0.0.1:38778}
NEUTRON_BIND=${FASTSNAP_TEST_NEUTRON_BIND:-127.0.0.1:38696}
RABBIT_PORT=${FASTSNAP_TEST_RABBIT_PORT:-38670}                              # AMQP, on 127.0.0.1
RABBIT_EPMD_PORT=${FASTSNAP_TEST_RABBIT_EPMD_PORT:-$((RABBIT_PORT + 1))}      # this stack's own epmd
RABBIT_DIST_PORT=${FASTSNAP_TEST_RABBIT_DIST_PORT:-$((RABBIT_PORT + 5))}      # Erlang distribution
NOVA_URL=${FASTSNAP_TEST_NOVA_PUBLIC_URL:-http://$NOVA_API_BIND/v2.1}
PLACEMENT_URL=${FASTSNAP_TEST_PLACEMENT_PUBLIC_URL:-http://$PLACEMENT_BIND}
NEUTRON_URL=${FASTSNAP_TEST_NEUTRON_PUBLIC_URL:-http://$NEUTRON_BIND}
NOVA_DRIVER=${FASTSNAP_TEST_NOVA_DRIVER:-libvirt.LibvirtDriver}              # Nova's [DEFAULT] compute_driver
NOVA_SNAPSHOT_FORMAT=${FASTSNAP_TEST_NOVA_SNAPSHOT_FORMAT:-}                 # [libvirt] snapshot_image_format (unset: Nova's default)
# nova-compute's own Glance view (nova-compute.conf only: the other Nova services keep theirs, nothing else restarts):
NOVA_COMPUTE_GLANCE_URL=${FASTSNAP_TEST_NOVA_COMPUTE_GLANCE_URL:-}          # [glance] endpoint_override (unset: the catalogue's)
NOVA_SERVICE_USER_TOKEN=${FASTSNAP_TEST_NOVA_SERVICE_USER_TOKEN:-true}      # [service_user] send_service_user_token
# fastsnap.FastsnapLibvirtDriver: fastsnap's Nova hook (nova-fastsnap/), asking the service on this socket.
FASTSNAP_SOCKET=${FASTSNAP_TEST_NOVA_FASTSNAP_SOCKET:-$RUN/fastsnap/api.sock}
# Names this stack gives machine-wide libvirt objects (domains, the Ceph secret), so that two stacks never collide.
STACK_ID=$(printf '%s' "$(realpath -m "$RUN")" | sha256sum | cut -c1-8)
NOVA_INSTANCE_PREFIX=${FASTSNAP_TEST_NOVA_INSTANCE_PREFIX:-fs$STACK_ID}
export CEPH_OSD_SIZE_REMOTE=${FASTSNAP_TEST_CEPH_OSD_SIZE_REMOTE:-12G}

DEBIAN_PACKAGES=(ceph-mon ceph-osd ceph-mgr ceph-common python3-rados python3-rbd python3-venv
                 postgresql uuid-runtime qemu-utils qemu-block-extra procps curl gawk
                 python3-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86)
# With Nova (libvirt is in the base list: the quiesce tests boot a guest without Nova; the guest's own packages
# are installed by lib/guest/build).
NOVA_DEBIAN_PACKAGES=(rabbitmq-server)

# gunicorn closes idle keep-alive connections after 2 s by default: exactly the poll interval of
# `openstack server delete --wait`, so a poll could race the close and fail with "Remote end closed connection
# without response". OpenStack's own deployments keep connections longer (Apache/uWSGI); so does the stack.
GUNICORN_KEEPALIVE=${FASTSNAP_TEST_GUNICORN_KEEPALIVE:-75}
# Glance's [DEFAULT] do_secure_hash (True: Glance's default, it re-reads each registered rbd location to hash it);
# bench.cost measures both (it runs `up` with False and back). Glance's gunicorn workers.
GLANCE_SECURE_HASH=${FASTSNAP_TEST_GLANCE_SECURE_HASH:-True}
GLANCE_WORKERS=${FASTSNAP_TEST_GLANCE_WORKERS:-2}
# Glance's [DEFAULT] show_multiple_locations (deprecated, default False): True lets a service add a location with
# the JSON-patch API (fastsnap's [glance] location_api = patch, Nova's rbd snapshots before 2025.2).
GLANCE_SHOW_MULTIPLE_LOCATIONS=${FASTSNAP_TEST_GLANCE_SHOW_MULTIPLE_LOCATIONS:-False}
# Glance's [taskflow_executor] engine_mode and max_workers (its defaults: parallel, 10): the task that activates a
# registered location runs on it.
GLANCE_TASKFLOW_ENGINE=${FASTSNAP_TEST_GLANCE_TASKFLOW_ENGINE:-parallel}
GLANCE_TASKFLOW_WORKERS=${FASTSNAP_TEST_GLANCE_TASKFLOW_WORKERS:-10}

# The stack's fixed ports lie in Linux's ephemeral range (32768-60999): an outgoing connection of any process may
# be given one of them as its local port just before the service binds it ("Address already in use"). Adding them
# to net.ipv4.ip_local_reserved_ports keeps the kernel from handing them out (binding them explicitly still works).
# Machine-wide and kept after `down` (harmless); skipped, with a note, where /proc/sys is read-only.
stack_ports() {
  local p=("$PG_PORT" "${KEYSTONE_BIND##*:}" "${GLANCE_BIND##*:}" "${FASTSNAP_TEST_SERVICE_PORT:-38787}")
  if [ "$NOVA" = 1 ]; then
    p+=("${NOVA_API_BIND##*:}" "${PLACEMENT_BIND##*:}" "${NEUTRON_BIND##*:}" "$RABBIT_PORT" "$RABBIT_EPMD_PORT"
        "$RABBIT_DIST_PORT")
  fi
  printf '%s\n' "${p[@]}"
}

reserve_ports() {
  local f=/proc/sys/net/ipv4/ip_local_reserved_ports have want
  [ -r "$f" ] || return 0
  have=$(cat "$f")
  want=$( { tr ',' '\n' <<<"$have"; stack_ports; } | grep -E '^[0-9]+(-[0-9]+)?$' | sort -u | paste -sd, -)
  [ "$want" = "$have" ] && return 0
  if ! { echo "$want" >"$f"; } 2>/dev/null; then
    log "note: could not reserve the stack's ports in $f (read-only here); a rare port clash stays possible"
  fi
}

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
  p=$(cat "$f" 2>/dev/null) || return 0   # (gone meanwhile: some daemons remove their own pid file)
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

# keystone_authtoken_section USER: keystonemiddleware's section for a service user of the stack (Glance, fastsnap).
keystone_authtoken_section() {
  cat <<CONF
[keystone_authtoken]
www_authenticate_uri = $KEYSTONE_URL
auth_url = $KEYSTONE_URL
auth_type = password
username = $1
password = $SERVICE_PASSWORD
project_name = service
user_domain_name = Default
project_domain_name = Default
service_token_roles_required = true
CONF
}

# remote_user CLUSTER_DIR POOL: fastsnap's least-privilege user on another cluster (cluster B), for the delta and
# copy paths (issue 16): it creates, clones, writes, snapshots and removes images in Glance's pool there, nothing
# else. Idempotent (get-or-create); the keyring lands where that cluster's ceph.conf looks (keyring.$name).
REMOTE_USER=fastsnap-remote
remote_user() {
  local dir=$1 pool=$2
  # The mgr caps (and mon 'mgr stat'): incremental backups (issue 25) queue 'rbd task add flatten' on that
  # cluster's own mgr to keep their clone chains short. A keyring made before gets the caps set again.
  local caps=(mon 'profile rbd, allow command "mgr stat"' osd "profile rbd pool=$pool" mgr "profile rbd pool=$pool")
  if [ -s "$dir/keyring.client.$REMOTE_USER" ]; then
    timeout 30 ceph -c "$dir/ceph.conf" --connect-timeout 20 auth caps "client.$REMOTE_USER" "${caps[@]}" \
      >/dev/null 2>&1 || true
    return 0
  fi
  timeout 30 ceph -c "$dir/ceph.conf" --connect-timeout 20 auth get-or-create "client.$REMOTE_USER" \
    "${caps[@]}" -o "$dir/keyring.client.$REMOTE_USER" >/dev/null
}

# write_env OUT CEPH_A_DIR CEPH_B_DIR: OUT/fastsnap.conf and OUT/env.sh for the stack's clients (tests, demo,
# CLI). A cluster dir has the fsid in .created (ceph-cluster.sh start) or fsid (ceph-cluster.sh export).
write_env() {
  local out=$1 a=$2 b=$3 a_fsid b_fsid
  a_fsid=$(cat "$a/.created" 2>/dev/null || cat "$a/fsid")
  b_fsid=$(cat "$b/.created" 2>/dev/null || cat "$b/fsid")
  mkdir -p "$out/fastsnap-state" "$out/fastsnap-log"
  cat >"$out/fastsnap.conf" <<CONF
# Generated by ceph-test-env ($(basename "$0")) for the test stack.
[DEFAULT]
log_dir = $out/fastsnap-log
[ceph]
conf = $a/ceph.conf
user = fastsnap
# Cluster B (Glance store "remote"): written directly by the delta and copy paths.
remote_clusters = ceph_b
[ceph_b]
fsid = $b_fsid
conf = $b/ceph.conf
user = $REMOTE_USER
[glance]
auth_type = password
auth_url = $KEYSTONE_URL
username = fastsnap
password = $SERVICE_PASSWORD
project_name = service
user_domain_name = Default
project_domain_name = Default
timeout = 60
[journal]
state_dir = $out/fastsnap-state
[service]
bind_host = 127.0.0.1
bind_port = ${FASTSNAP_TEST_SERVICE_PORT:-38787}
# The stack's tools (tests, bench) drive the service as fastsnap's own user (role service), as an
# operator's tooling would with admin: they may snapshot as fastsnap itself (default: admin only).
operator_roles = admin,service
$(keystone_authtoken_section fastsnap)
CONF
  chmod 600 "$out/fastsnap.conf"   # two passwords
  cat >"$out/env.sh" <<ENV
# Generated by ceph-test-env ($(basename "$0")); source it.
export CEPH_CONF=$a/ceph.conf
export CEPH_CONF_REMOTE=$b/ceph.conf
export FASTSNAP_TEST_FSID_A=$a_fsid
export FASTSNAP_TEST_FSID_B=$b_fsid
export OS_AUTH_URL=$KEYSTONE_URL
export OS_USERNAME=demo
export OS_PASSWORD=$DEMO_PASSWORD
export OS_PROJECT_NAME=demo
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_IMAGE_API_VERSION=2
export OS_IDENTITY_API_VERSION=3
export FASTSNAP_CONFIG_FILE=$out/fastsnap.conf
export FASTSNAP_TEST_GLANCE_URL=$GLANCE_URL
export FASTSNAP_TEST_ADMIN_PASSWORD=$ADMIN_PASSWORD
export FASTSNAP_TEST_SERVICE_PASSWORD=$SERVICE_PASSWORD
export FASTSNAP_TEST_DEMO_PASSWORD=$DEMO_PASSWORD
ENV
  # The Nova part (lib/nova.sh nova_client_env), while this stack has one.
  if [ -s "$RUN/nova/client.env" ]; then cat "$RUN/nova/client.env" >>"$out/env.sh"; fi
  if [ -s "$RUN/nova/driver.env" ]; then cat "$RUN/nova/driver.env" >>"$out/env.sh"; fi
}
