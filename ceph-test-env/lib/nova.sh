# The Nova compute host of the test stack (sourced by up/down; up runs it with FASTSNAP_TEST_NOVA=1 or --nova):
# RabbitMQ (own node, epmd and dirs under run/), libvirt (machine-wide daemons, started when not running),
# Placement, Neutron (ML2 without agents: Nova calls the network API on delete), Nova api/conductor/scheduler/
# compute (libvirt, TCG, images_type = rbd on cluster A), the test guest's images and a tiny flavor.
RMQ_DIR=$RUN/rabbitmq
PL_DIR=$RUN/placement
NE_DIR=$RUN/neutron
NV_DIR=$RUN/nova
GUEST_DIR=$RUN/guest
NOVA_SERVICES=(conductor scheduler compute)
RMQ_NODE=fastsnap$RABBIT_PORT@localhost
RMQ_SBIN=/usr/lib/rabbitmq/bin
RABBIT_URL="rabbit://openstack:$SERVICE_PASSWORD@127.0.0.1:$RABBIT_PORT/"
SECRET_USAGE="fastsnap-$STACK_ID client.nova"   # libvirt secret usage names are machine-wide unique

# The venv's stamp: the release's requirements file and the constraints files it names (-c).
nova_venv_want() {
  local req=$NOVA_REQUIREMENTS c files=("$NOVA_REQUIREMENTS")
  for c in $(sed -n 's/^-c *//p' "$req"); do files+=("$(dirname "$req")/$c"); done
  { echo "$NOVA_RELEASE"; cat "${files[@]}"; } | sha256sum | cut -c1-16
}

nova_venv_current() {
  [ -x "$NOVA_VENV/bin/nova-compute" ] && [ "$(cat "$NOVA_VENV/.fastsnap-stamp" 2>/dev/null)" = "$(nova_venv_want)" ]
}

# The Nova venv for NOVA_RELEASE; made anew (venv --clear) when the release or its requirements changed.
nova_venv() {
  local req=$NOVA_REQUIREMENTS want t0=$SECONDS
  nova_venv_current && return 0
  want=$(nova_venv_want)
  log "nova venv: OpenStack $NOVA_RELEASE, installing $(grep -c '^[a-zA-Z]' "$req") requirements into $NOVA_VENV"
  {
    /usr/bin/python3 -m venv --clear --system-site-packages "$NOVA_VENV" &&
    "$NOVA_VENV/bin/pip" install -q --upgrade pip &&
    "$NOVA_VENV/bin/pip" install -q -r "$req" &&
    "$NOVA_VENV/bin/python" -c 'import nova.virt.libvirt.driver, placement, neutron, libvirt, rados, rbd'
  } >"$RUN/nova-venv.log" 2>&1 || die "nova venv set-up failed (log: $RUN/nova-venv.log)"
  echo "$NOVA_RELEASE" >"$NOVA_VENV/.fastsnap-release"
  echo "$want" >"$NOVA_VENV/.fastsnap-stamp"
  local nova_version
  nova_version=$("$NOVA_VENV/bin/python" -c 'from nova import version; print(version.version_string())')
  log "nova venv: OpenStack $NOVA_RELEASE (Nova $nova_version) built in $((SECONDS - t0))s"
}

# The release the Nova part's databases belong to (a stack made before releases were chosen ran 2026.2). Not
# `release`: Nova reads a file of that name beside nova.conf (vendor information).
nova_part_release() {
  if [ -f "$NV_DIR/.openstack-release" ]; then cat "$NV_DIR/.openstack-release"
  elif [ -f "$NV_DIR/.cells" ]; then echo 2026.2
  fi
}

# Before the venv changes under them: another release stops the Nova part's services (and this stack's libvirt
# domains, whose servers go with the old databases) and marks the databases to be made anew (nova_up); other
# requirements in the same release only stop the services.
nova_prepare_release() {
  local have
  have=$(nova_part_release)
  if [ -n "$have" ] && [ "$have" != "$NOVA_RELEASE" ]; then
    log "nova part: OpenStack $have -> $NOVA_RELEASE: stopping its services; its databases are made anew"
    nova_domains_destroy
    nova_services_stop
    touch "$NV_DIR/.reset"
  elif ! nova_venv_current; then
    nova_services_stop
  fi
}

# The Nova part's databases and what was made in them, dropped (nova_prepare_release asked for it).
nova_reset_databases() {
  [ -f "$NV_DIR/.reset" ] || return 0
  local db
  log "nova part: dropping the databases of the previous release"
  for db in nova_api nova nova_cell0 placement neutron; do
    as_pg psql -h "$PG_SOCK" -p "$PG_PORT" -U postgres -qc "drop database if exists $db with (force)" >/dev/null ||
      die "could not drop database $db"
  done
  rm -f "$PL_DIR/.synced" "$NE_DIR/.synced" "$NV_DIR/.cells" "$NV_DIR/.discovered" "$NV_DIR/.seeded" "$NV_DIR/.reset"
}

# fastsnap's hook for Nova (nova-fastsnap/, README "Enabling fastsnap in Nova") in the Nova venv, as an operator
# installs it: always there; nova-compute uses it when compute_driver = fastsnap.FastsnapLibvirtDriver.
nova_hook_install() {
  local stamp=$NOVA_VENV/.nova-fastsnap-stamp want
  want=$(cat "$ROOT/nova-fastsnap/pyproject.toml" "$ROOT"/nova-fastsnap/nova/virt/fastsnap/*.py | sha256sum | cut -c1-16)
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  log "nova venv: installing fastsnap's Nova hook (pip install ./nova-fastsnap)"
  { "$NOVA_VENV/bin/pip" install -q --no-deps --no-build-isolation --force-reinstall "$ROOT/nova-fastsnap" &&
    "$NOVA_VENV/bin/python" -c 'from nova.virt.fastsnap import FastsnapLibvirtDriver'
  } >>"$RUN/nova-venv.log" 2>&1 || die "installing nova-fastsnap failed (log: $RUN/nova-venv.log)"
  rm -rf "$ROOT/nova-fastsnap/build"   # pip's in-tree build
  echo "$want" >"$stamp"
}

# --- RabbitMQ: this stack's own node, epmd and directories ------------------------------------------------------
rmq_env() {
  env HOME="$RMQ_DIR" RABBITMQ_NODENAME="$RMQ_NODE" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$RABBIT_PORT" RABBITMQ_DIST_PORT="$RABBIT_DIST_PORT" ERL_EPMD_PORT="$RABBIT_EPMD_PORT" \
    ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia" RABBITMQ_LOG_BASE="$RMQ_DIR/log" \
    RABBITMQ_PID_FILE="$RMQ_DIR/rabbitmq.pid" RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins" RABBITMQ_CONF_ENV_FILE=/dev/null \
    RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ_DIR/advanced.config" "$@"
}

rabbit_start() {
  mkdir -p "$RMQ_DIR"/{mnesia,log}
  if [ ! -f "$RMQ_DIR/.erlang.cookie" ]; then
    head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$RMQ_DIR/.erlang.cookie"
    chmod 0400 "$RMQ_DIR/.erlang.cookie"
  fi
  cat >"$RMQ_DIR/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$RABBIT_PORT
default_user = openstack
default_pass = $SERVICE_PASSWORD
loopback_users = none
disk_free_limit.absolute = 50MB
log.file.level = warning
CONF
  echo '[].' >"$RMQ_DIR/enabled_plugins"
  echo '[].' >"$RMQ_DIR/advanced.config"
  if ! pid_alive "$RMQ_DIR/rabbitmq.pid"; then
    log "rabbitmq: starting node $RMQ_NODE on 127.0.0.1:$RABBIT_PORT (epmd $RABBIT_EPMD_PORT)"
    rm -f "$RMQ_DIR/rabbitmq.pid"
    (cd "$RMQ_DIR" && rmq_env setsid -f "$RMQ_SBIN/rabbitmq-server" >"$RMQ_DIR/log/startup.log" 2>&1 </dev/null)
  fi
  local i
  for i in $(seq 1 120); do
    rmq_env timeout 20 "$RMQ_SBIN/rabbitmqctl" -q await_startup >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  tail -n 20 "$RMQ_DIR/log/startup.log" >&2 || true
  die "rabbitmq did not start (logs: $RMQ_DIR/log/)"
}

rabbit_stop() {
  [ -d "$RMQ_DIR" ] || return 0
  stop_pidfile "$RMQ_DIR/rabbitmq.pid" "rabbitmq ($RMQ_NODE)"   # SIGTERM: RabbitMQ stops cleanly
  # This stack's own epmd (port $RABBIT_EPMD_PORT); never the machine's default one.
  ERL_EPMD_PORT=$RABBIT_EPMD_PORT timeout 10 epmd -kill >/dev/null 2>&1 || true
}

# --- libvirt: machine-wide daemons, shared by every stack; started when not running, never stopped -------------
libvirt_start() {
  pgrep -x virtlogd >/dev/null || { log "starting virtlogd (machine-wide)"; virtlogd -d; }
  if ! pgrep -x libvirtd >/dev/null; then
    log "starting libvirtd (machine-wide; first start probes QEMU, ~8 s)"
    libvirtd -d
  fi
  local i
  for i in $(seq 1 120); do
    virsh -c qemu:///system version >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "libvirtd does not answer on qemu:///system"
}

# The uuid of this stack's libvirt secret (by its usage name), if defined.
stack_secret() {
  local u
  for u in $(virsh -c qemu:///system secret-list 2>/dev/null | awk 'NR > 2 && $1 != "" {print $1}'); do
    # (not `virsh | grep -q`: with pipefail, grep's early exit can fail virsh with SIGPIPE)
    if [[ $(virsh -c qemu:///system secret-dumpxml "$u" 2>/dev/null) == *"<name>$SECRET_USAGE</name>"* ]]; then
      echo "$u"
      return 0
    fi
  done
  return 0
}

# Ceph user client.nova on cluster A and its key as this stack's libvirt secret.
nova_ceph() {
  local conf=$RUN/ceph-a/ceph.conf key images_cap
  # Stock Nova's direct snapshot clones into `images` and flattens there: it needs write access. A host whose
  # snapshots go through fastsnap needs only read (FASTSNAP_TEST_NOVA_IMAGES_CAP=rbd-read-only).
  images_cap=${FASTSNAP_TEST_NOVA_IMAGES_CAP:-rbd}
  NOVA_CEPH_CAPS=(mon 'profile rbd' osd "profile rbd pool=vms, profile $images_cap pool=images")
  if [ ! -s "$RUN/ceph-a/keyring.client.nova" ]; then
    timeout 30 ceph -c "$conf" auth get-or-create client.nova "${NOVA_CEPH_CAPS[@]}" \
      -o "$RUN/ceph-a/keyring.client.nova" || die "cannot create client.nova on cluster A"
  fi
  key=$(timeout 30 ceph -c "$conf" auth print-key client.nova) || die "cannot read client.nova's key"
  local uuid
  uuid=$(stack_secret)
  if [ -z "$uuid" ]; then
    uuid=$(uuidgen)
    cat >"$NV_DIR/secret.xml" <<XML
<secret ephemeral='no' private='no'>
  <uuid>$uuid</uuid>
  <usage type='ceph'><name>$SECRET_USAGE</name></usage>
</secret>
XML
    virsh -c qemu:///system secret-define "$NV_DIR/secret.xml" >/dev/null || die "virsh secret-define failed"
  fi
  virsh -c qemu:///system secret-set-value --secret "$uuid" --base64 "$key" >/dev/null 2>&1 \
    || die "virsh secret-set-value failed"
  SECRET_UUID=$uuid
  echo "$uuid" >"$NV_DIR/secret.uuid"
}

# ksa_section GROUP USER: keystoneauth1 password options of a service user.
ksa_section() {
  cat <<CONF
[$1]
auth_type = password
auth_url = $KEYSTONE_URL
username = $2
password = $SERVICE_PASSWORD
project_name = service
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
valid_interfaces = public
CONF
}

# start_daemon NAME PIDFILE LOG CMD...: run a foreground service in the background (own session) by pid file.
start_daemon() {
  local name=$1 pidf=$2 logf=$3
  shift 3
  pid_alive "$pidf" && return 0
  log "$name: starting"
  setsid "$@" >>"$logf" 2>&1 </dev/null &
  echo $! >"$pidf"
}

# gunicorn_start NAME DIR BIND MODULE ENV...: an OpenStack WSGI app (lib/argv_wsgi.py) under gunicorn.
gunicorn_start() {
  local name=$1 dir=$2 bind=$3 module=$4
  shift 4
  if ! pid_alive "$dir/gunicorn.pid"; then
    log "$name: starting on $bind"
    rm -f "$dir/gunicorn.pid"
    # gunicorn 25's control socket is not wanted; 2025.1's and 2025.2's upper-constraints pin gunicorn 23, which
    # has none.
    local ctl=() workers=(-w 1 --threads 4)
    "$NOVA_VENV/bin/gunicorn" --help 2>/dev/null | grep -q -- --no-control-socket && ctl=(--no-control-socket)
    # Nova 31's and 32's API monkey-patches eventlet when it is imported (nova.api.openstack; 33 and later run it on
    # native threads): gunicorn's threaded worker then hangs on its first request, so single-threaded workers.
    if [ "$name" = nova-api ] &&
       grep -q 'monkey_patch' "$NOVA_VENV"/lib/python3*/site-packages/nova/api/openstack/__init__.py; then
      workers=(-w 2 --threads 1)
    fi
    env "$@" FASTSNAP_WSGI_APP="$module" PYTHONPATH="$ENV_DIR/lib" "$NOVA_VENV/bin/gunicorn" "${ctl[@]}" \
      -D -p "$dir/gunicorn.pid" -b "$bind" "${workers[@]}" --timeout 300 --keep-alive "$GUNICORN_KEEPALIVE" \
      --error-logfile "$dir/log/gunicorn.log" argv_wsgi:application || die "$name did not start (log: $dir/log/gunicorn.log)"
  fi
}

placement_start() {
  mkdir -p "$PL_DIR"/log
  cat >"$PL_DIR/placement.conf" <<CONF
[DEFAULT]
log_file = $PL_DIR/log/placement.log
[placement_database]
connection = $(pg_url placement)
[api]
auth_strategy = keystone
$(keystone_authtoken_section placement)
CONF
  if [ ! -f "$PL_DIR/.synced" ]; then
    "$NOVA_VENV/bin/placement-manage" --config-file "$PL_DIR/placement.conf" db sync >"$PL_DIR/log/manage.log" 2>&1 \
      || die "placement db sync failed (log: $PL_DIR/log/manage.log)"
    touch "$PL_DIR/.synced"
  fi
  gunicorn_start placement "$PL_DIR" "$PLACEMENT_BIND" placement.wsgi.api OS_PLACEMENT_CONFIG_DIR="$PL_DIR"
}

# Neutron's API with ML2 and no agents or mechanism drivers: enough for Nova's network calls of servers booted
# with `--nic none` (listing the server's ports on delete). Neutron's migrations are MySQL-only (2025.2 adds
# `ALTER TABLE ... CONVERT TO CHARACTER SET utf8mb4`), so the schema is created from its models on PostgreSQL.
neutron_start() {
  mkdir -p "$NE_DIR"/{log,locks}
  cp "$NOVA_VENV/etc/neutron/api-paste.ini" "$NE_DIR/api-paste.ini"
  cat >"$NE_DIR/neutron.conf" <<CONF
[DEFAULT]
log_file = $NE_DIR/log/neutron.log
core_plugin = ml2
service_plugins =
auth_strategy = keystone
api_paste_config = $NE_DIR/api-paste.ini
transport_url = $RABBIT_URL
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
[database]
connection = $(pg_url neutron)
[ml2]
type_drivers = local,flat
tenant_network_types = local
mechanism_drivers =
extension_drivers =
[oslo_concurrency]
lock_path = $NE_DIR/locks
$(keystone_authtoken_section neutron)
CONF
  if [ ! -f "$NE_DIR/.synced" ]; then
    "$NOVA_VENV/bin/python" - "$(pg_url neutron)" >"$NE_DIR/log/manage.log" 2>&1 <<'PY' ||
import sys
import sqlalchemy as sa
from neutron.db.migration.models import head
head.get_metadata().create_all(sa.create_engine(sys.argv[1]))
PY
      die "neutron schema creation failed (log: $NE_DIR/log/manage.log)"
    touch "$NE_DIR/.synced"
  fi
  gunicorn_start neutron "$NE_DIR" "$NEUTRON_BIND" neutron_wsgi OS_NEUTRON_CONFIG_DIR="$NE_DIR" \
    OS_NEUTRON_CONFIG_FILES=neutron.conf
}

# Running services whose configuration file changed (e.g. another FASTSNAP_TEST_NOVA_DRIVER) are restarted; the
# compute host's own settings (compute_driver, snapshot_image_format) restart nova-compute only.
nova_conf() {
  mkdir -p "$NV_DIR"/{log,state,instances,locks}
  cp "$NOVA_VENV/etc/nova/api-paste.ini" "$NV_DIR/api-paste.ini"
  local before_ctl before_cpu
  before_ctl=$(grep -v -e '^compute_driver = ' -e '^snapshot_image_format = ' "$NV_DIR/nova.conf" 2>/dev/null || true)
  before_cpu=$(cat "$NV_DIR/nova-compute.conf" 2>/dev/null || true)
  cat >"$NV_DIR/nova.conf" <<CONF
# Generated by ceph-test-env (lib/nova.sh) for the test stack.
[DEFAULT]
host = fastsnap-$STACK_ID
state_path = $NV_DIR/state
instances_path = $NV_DIR/instances
transport_url = $RABBIT_URL
compute_driver = $NOVA_DRIVER
# Machine-wide libvirt domain names: per stack, so that two stacks on one machine never collide.
instance_name_template = $NOVA_INSTANCE_PREFIX-%08x
my_ip = 127.0.0.1
enabled_apis = osapi_compute
# Servers are booted with --nic none: no port to heal.
heal_instance_info_cache_interval = -1
# Shelving offloads at once (Nova's default, stated): the disk is removed right after the shelve snapshot.
shelved_offload_time = 0
# QEMU TCG on 2 shared cores: boots, snapshots and deletes are slow.
rpc_response_timeout = 180
graceful_shutdown_timeout = 5
long_rpc_timeout = 1800
block_device_allocate_retries = 120
reserved_host_memory_mb = 512
initial_ram_allocation_ratio = 1.0
# 2 cores x 8.0 = 16 VCPU for the 1-vCPU flavor: the "many" lifecycle test's 8 servers at once leave headroom
# (cpu_allocation_ratio, unlike initial_cpu_allocation_ratio, also applies to a compute node that exists).
cpu_allocation_ratio = 8.0
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = $NV_DIR/api-paste.ini
[api_database]
connection = $(pg_url nova_api)
[database]
connection = $(pg_url nova)
[oslo_concurrency]
lock_path = $NV_DIR/locks
[oslo_messaging_notifications]
driver = noop
[conductor]
workers = 1
[scheduler]
workers = 1
[compute]
# A failed boot in a test must not take the only compute host out of scheduling.
consecutive_build_service_disable_threshold = 0
[libvirt]
virt_type = qemu
cpu_mode = none
images_type = rbd
$([ -n "$NOVA_SNAPSHOT_FORMAT" ] && echo "snapshot_image_format = $NOVA_SNAPSHOT_FORMAT")
images_rbd_pool = vms
images_rbd_ceph_conf = $RUN/ceph-a/ceph.conf
rbd_user = nova
rbd_secret_uuid = $SECRET_UUID
# TCG guests take seconds to react to an ACPI shutdown.
wait_soft_reboot_seconds = 60
[vnc]
enabled = false
[spice]
enabled = false
[serial_console]
enabled = false
[nova_sys_admin]
helper_command = $NOVA_VENV/bin/privsep-helper --config-file $NV_DIR/nova.conf
[glance]
# The image endpoint from Keystone's catalogue.
valid_interfaces = public
region_name = RegionOne
$(keystone_authtoken_section nova)
$(ksa_section service_user nova)
send_service_user_token = true
$(ksa_section placement placement)
$(ksa_section neutron neutron)
[fastsnap]
# fastsnap's service on this host, for compute_driver = fastsnap.FastsnapLibvirtDriver (the tests start it).
unix_socket = $FASTSNAP_SOCKET
CONF
  # nova-compute gets no database access (as on a real compute host): the same file without the databases; and
  # the compute host's own view of Glance when a test asks for one (tests/integration/test_nova_glance_shapes.py):
  # another glance-api's URL, and send_service_user_token on or off (doc/source/install/glance-shapes.rst).
  awk -v url="$NOVA_COMPUTE_GLANCE_URL" -v token="$NOVA_SERVICE_USER_TOKEN" '
    /^\[/ { skip = ($0 == "[database]" || $0 == "[api_database]") }
    skip { next }
    /^send_service_user_token = / { print "send_service_user_token = " token; next }
    { print }
    $0 == "[glance]" && url != "" { print "endpoint_override = " url }' "$NV_DIR/nova.conf" |
    sed "s#--config-file $NV_DIR/nova.conf#--config-file $NV_DIR/nova-compute.conf#" >"$NV_DIR/nova-compute.conf"
  local pids=() s
  if [ -n "$before_cpu" ] && [ "$before_cpu" != "$(cat "$NV_DIR/nova-compute.conf")" ] &&
     pid_alive "$NV_DIR/nova-compute.pid"; then
    log "nova-compute: configuration changed (compute_driver $NOVA_DRIVER, snapshot_image_format ${NOVA_SNAPSHOT_FORMAT:-unset}, glance ${NOVA_COMPUTE_GLANCE_URL:-from the catalogue}, send_service_user_token $NOVA_SERVICE_USER_TOKEN), restarting"
    stop_pidfile "$NV_DIR/nova-compute.pid" nova-compute & pids+=($!)
  fi
  if [ -n "$before_ctl" ] && [ "$before_ctl" != "$(grep -v -e '^compute_driver = ' -e '^snapshot_image_format = ' "$NV_DIR/nova.conf")" ]; then
    log "nova: configuration changed, restarting api, conductor, scheduler"
    for s in conductor scheduler; do stop_pidfile "$NV_DIR/nova-$s.pid" "nova-$s" & pids+=($!); done
    stop_pidfile "$NV_DIR/gunicorn.pid" nova-api & pids+=($!)
  fi
  if [ "${#pids[@]}" -gt 0 ]; then wait "${pids[@]}" || true; fi
}

nova_db() {
  [ -f "$NV_DIR/.cells" ] && return 0
  local nm=("$NOVA_VENV/bin/nova-manage" --config-file "$NV_DIR/nova.conf")
  log "nova: api_db sync, cell0, cell1, db sync"
  {
    "${nm[@]}" api_db sync &&
    "${nm[@]}" cell_v2 map_cell0 --database_connection "$(pg_url nova_cell0)" &&
    { "${nm[@]}" cell_v2 list_cells | grep ' cell1 ' >/dev/null ||
      "${nm[@]}" cell_v2 create_cell --name cell1 --database_connection "$(pg_url nova)" \
        --transport-url "$RABBIT_URL"; } &&
    "${nm[@]}" db sync
  } >"$NV_DIR/log/manage.log" 2>&1 || die "nova database set-up failed (log: $NV_DIR/log/manage.log)"
  touch "$NV_DIR/.cells"
}

nova_services_start() {
  gunicorn_start nova-api "$NV_DIR" "$NOVA_API_BIND" nova.wsgi.osapi_compute OS_NOVA_CONFIG_DIR="$NV_DIR"
  local s conf cmd
  # A nova-compute (re)started here (e.g. nova_conf stopped it for another FASTSNAP_TEST_NOVA_DRIVER): up returns
  # once it consumes its RPC queue.
  local started=""
  pid_alive "$NV_DIR/nova-compute.pid" || started=1
  for s in "${NOVA_SERVICES[@]}"; do
    conf=$NV_DIR/nova.conf
    cmd=("$NOVA_VENV/bin/nova-$s")
    # nova-compute through lib/nova_compute.py: it sees only this stack's domains of the shared libvirtd.
    [ "$s" = compute ] && conf=$NV_DIR/nova-compute.conf &&
      cmd=(env FASTSNAP_NOVA_INSTANCE_PREFIX="$NOVA_INSTANCE_PREFIX" "$NOVA_VENV/bin/python" "$ENV_DIR/lib/nova_compute.py")
    start_daemon "nova-$s" "$NV_DIR/nova-$s.pid" "$NV_DIR/log/nova-$s.log" \
      "${cmd[@]}" --config-file "$conf" --log-file "$NV_DIR/log/nova-$s.log"
  done
  wait_http "http://$NOVA_API_BIND/" 120 nova-api "$NV_DIR/log/gunicorn.log"
  wait_http "$PLACEMENT_URL/" 60 placement "$PL_DIR/log/gunicorn.log"
  wait_http "$NEUTRON_URL/" 60 neutron "$NE_DIR/log/gunicorn.log"
  if [ -n "$started" ]; then
    local i
    for i in $(seq 1 120); do
      rmq_env "$RMQ_SBIN/rabbitmqctl" -q list_queues name consumers 2>/dev/null |
        awk -v q="compute.fastsnap-$STACK_ID" '$1 == q && $2 > 0 { ok = 1 } END { exit !ok }' && return 0
      pid_alive "$NV_DIR/nova-compute.pid" ||
        { tail -n 30 "$NV_DIR/log/nova-compute.log" >&2; die "nova-compute exited (log: $NV_DIR/log/nova-compute.log)"; }
      sleep 1
    done
    die "nova-compute did not consume its RPC queue within 120 s (log: $NV_DIR/log/nova-compute.log)"
  fi
}

# The compute host is up in its cell and reported to placement (once: the host mapping stays in the database).
nova_discover() {
  [ -f "$NV_DIR/.discovered" ] && return 0
  local i nm=("$NOVA_VENV/bin/nova-manage" --config-file "$NV_DIR/nova.conf")
  for i in $(seq 1 120); do
    for s in "${NOVA_SERVICES[@]}"; do
      pid_alive "$NV_DIR/nova-$s.pid" ||
        { tail -n 30 "$NV_DIR/log/nova-$s.log" >&2; die "nova-$s exited (log: $NV_DIR/log/nova-$s.log)"; }
    done
    if "${nm[@]}" cell_v2 discover_hosts --strict >>"$NV_DIR/log/manage.log" 2>&1 ||
       "${nm[@]}" cell_v2 list_hosts 2>/dev/null | grep "fastsnap-$STACK_ID" >/dev/null; then
      touch "$NV_DIR/.discovered"
      return 0
    fi
    sleep 1
  done
  die "nova-compute did not register (log: $NV_DIR/log/nova-compute.log)"
}

# Flavor, the guest's images, and NV_DIR/client.env for env.sh (again when the guest was rebuilt).
nova_seed() {
  local guest
  guest=$(sha256sum "$GUEST_DIR/build.json" | cut -c1-16)
  [ -s "$NV_DIR/client.env" ] && [ "$(cat "$NV_DIR/.seeded" 2>/dev/null)" = "$guest" ] && return 0
  "$NOVA_VENV/bin/python" "$ENV_DIR/lib/nova_seed.py" --auth-url "$KEYSTONE_URL" --admin-password "$ADMIN_PASSWORD" \
    --guest-dir "$GUEST_DIR" --out "$NV_DIR/client.env.tmp" >>"$NV_DIR/log/seed.log" 2>&1 \
    || { tail -n 20 "$NV_DIR/log/seed.log" >&2; die "nova seeding failed (log: $NV_DIR/log/seed.log)"; }
  mkdir -p "$NV_DIR/bin"
  ln -sfn "$NOVA_VENV/bin/openstack" "$NV_DIR/bin/openstack"
  cat >>"$NV_DIR/client.env.tmp" <<ENV
# The openstack CLI (of the Nova venv), alone on PATH.
PATH="$NV_DIR/bin:\$PATH"; export PATH
export OS_COMPUTE_API_VERSION=2.95
export FASTSNAP_TEST_NOVA=1
export FASTSNAP_TEST_NOVA_CONF=$NV_DIR/nova.conf
export FASTSNAP_TEST_NOVA_INSTANCE_PREFIX=$NOVA_INSTANCE_PREFIX
export FASTSNAP_TEST_LIBVIRT_URI=qemu:///system
export FASTSNAP_TEST_NOVA_VENV=$NOVA_VENV
export FASTSNAP_TEST_GUEST_DIR=$GUEST_DIR
ENV
  mv "$NV_DIR/client.env.tmp" "$NV_DIR/client.env"
  echo "$guest" >"$NV_DIR/.seeded"
}

# What needs neither PostgreSQL nor Ceph nor Keystone: up runs it in the background beside the base stack.
nova_early() {
  mkdir -p "$NV_DIR"/log
  nova_prepare_release
  nova_venv &
  local venv_pid=$!
  rabbit_start
  libvirt_start
  "$ENV_DIR/lib/guest/build" "$GUEST_DIR" 2>>"$NV_DIR/log/guest-build.log" \
    || die "guest build failed (log: $NV_DIR/log/guest-build.log)"
  wait "$venv_pid" || die "nova venv set-up failed (log: $RUN/nova-venv.log)"
  nova_hook_install
}

# nova_up [PID]: the rest, once the base stack is up (PID: a background nova_early to wait for).
nova_up() {
  local t0 t1
  t0=$(date +%s.%N)
  log "nova part: RabbitMQ, libvirt, Placement, Neutron, Nova of OpenStack $NOVA_RELEASE (compute_driver $NOVA_DRIVER)"
  if [ -n "${1:-}" ]; then
    wait "$1" || die "nova preparation failed (logs: $RUN/nova-venv.log, $NV_DIR/log/, $RMQ_DIR/log/)"
  else
    nova_early
  fi
  nova_reset_databases
  pg_ensure_db nova_api nova nova_cell0 placement neutron
  echo "$NOVA_RELEASE" >"$NV_DIR/.openstack-release"
  nova_ceph
  if [ ! -f "$KS_DIR/.nova-seeded" ]; then
    "$VENV/bin/python" "$ENV_DIR/lib/keystone_seed.py" --auth-url "$KEYSTONE_URL" \
      --admin-password "$ADMIN_PASSWORD" --service-password "$SERVICE_PASSWORD" \
      --demo-password "$DEMO_PASSWORD" --glance-url "$GLANCE_URL" --fastsnap-url "$FASTSNAP_URL" \
      --nova-url "$NOVA_URL" --placement-url "$PLACEMENT_URL" --neutron-url "$NEUTRON_URL" \
      >>"$KS_DIR/log/manage.log" 2>&1 \
      || die "keystone seeding (nova) failed (log: $KS_DIR/log/manage.log)"
    touch "$KS_DIR/.nova-seeded"
    # Keystone's workers cache the catalog (dogpile, 10 min): on a base stack that already served tokens, the
    # new endpoints would be missing from them until then. HUP: gunicorn replaces its workers (empty caches).
    if pid_alive "$KS_DIR/gunicorn.pid"; then
      kill -HUP "$(cat "$KS_DIR/gunicorn.pid")"
      sleep 2
      wait_http "$KEYSTONE_URL" 60 keystone "$KS_DIR/log/gunicorn.log"
    fi
  fi
  placement_start
  neutron_start
  nova_conf
  nova_db
  nova_services_start
  nova_discover
  nova_seed
  # What changes without reseeding (client.env is kept while the guest is unchanged).
  printf 'export FASTSNAP_TEST_NOVA_DRIVER=%s\nexport FASTSNAP_TEST_NOVA_FASTSNAP_SOCKET=%s\nexport FASTSNAP_TEST_NOVA_SNAPSHOT_FORMAT=%s\n' \
    "$NOVA_DRIVER" "$FASTSNAP_SOCKET" "$NOVA_SNAPSHOT_FORMAT" >"$NV_DIR/driver.env"
  t1=$(date +%s.%N)
  log "nova part up in $(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')s after the base stack (API $NOVA_URL)"
}

# This stack's libvirt domains (by name prefix), destroyed and undefined. Never libvirtd itself.
nova_domains_destroy() {
  local d
  command -v virsh >/dev/null && virsh -c qemu:///system version >/dev/null 2>&1 || return 0
  for d in $(virsh -c qemu:///system list --all --name 2>/dev/null | grep "^$NOVA_INSTANCE_PREFIX-" || true); do
    log "destroying libvirt domain $d"
    virsh -c qemu:///system destroy "$d" >/dev/null 2>&1 || true
    virsh -c qemu:///system undefine --nvram "$d" >/dev/null 2>&1 ||
      virsh -c qemu:///system undefine "$d" >/dev/null 2>&1 || true
  done
}

# Nova's services, Neutron and Placement (everything that runs from the Nova venv), in parallel: Nova's services
# take up to 10 s each to stop.
nova_services_stop() {
  local s pids=()
  for s in compute scheduler conductor; do stop_pidfile "$NV_DIR/nova-$s.pid" "nova-$s" & pids+=($!); done
  stop_pidfile "$NV_DIR/gunicorn.pid" nova-api & pids+=($!)
  stop_pidfile "$NE_DIR/gunicorn.pid" neutron & pids+=($!)
  stop_pidfile "$PL_DIR/gunicorn.pid" placement & pids+=($!)
  wait "${pids[@]}" || true
}

# Delete this stack's libvirt domains and secret; stop its services. Never libvirtd itself.
nova_stop() {
  local d
  nova_domains_destroy
  if command -v virsh >/dev/null && virsh -c qemu:///system version >/dev/null 2>&1; then
    d=$(stack_secret)
    if [ -n "$d" ]; then virsh -c qemu:///system secret-undefine "$d" >/dev/null 2>&1 || true; fi
  fi
  rabbit_stop &
  nova_services_stop
  wait || true
}
