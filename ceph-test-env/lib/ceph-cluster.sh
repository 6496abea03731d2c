#!/usr/bin/env bash
# One-mon, one-mgr, one-OSD (bluestore on a sparse file) Ceph cluster with cephx.
# Used by the native stack (ceph-test-env/up) and by the container images alike.
#
#   ceph-cluster.sh start  DIR IP POOLS...   create (first time) or start the cluster in DIR, mon on IP
#   ceph-cluster.sh stop   DIR               stop its daemons (by pid file) and wait until they are gone
#   ceph-cluster.sh status DIR               exit 0 when the cluster answers and has an OSD up
#   ceph-cluster.sh wait   DIR               block while the daemons run; exit 1 when one of them is gone
#   ceph-cluster.sh export DIR DEST          write a client-only ceph.conf (keyring = DEST/keyring.$name),
#                                            the client.* keyrings and the fsid to DEST, for clients elsewhere
#
# Tunables (environment): CEPH_OSD_SIZE (default 16G, sparse), CEPH_PAXOS_INTERVAL (default 0.01 s),
# CEPH_OSD_MEMORY_TARGET (default 1G), CEPH_MON_PORT (6789), CEPH_MON_PORT_V2 (3300).
# CEPH_DAEMONS (default "mon mgr osd"): the daemons this invocation starts, stops, checks and waits for, so that
# one cluster's daemons can run in separate containers sharing DIR and the network namespace (the containers
# run "mon mgr" and "osd"). Creating the cluster needs mon; a creator without osd runs the OSD only for the
# creation and stops it; an invocation without mon waits for the cluster to be created
# (CEPH_CREATE_WAIT seconds, default 600). CEPH_DAEMON_ADDR: the address the mgr and OSD this invocation starts
# bind (default: the monitor's IP), for daemons of one cluster on separate hosts or containers.
# Client users it creates, least privilege (documented in README's operator page):
#   client.fastsnap  mon 'profile rbd, allow command "mgr stat"'  osd 'profile rbd pool=<each pool>'  mgr 'profile rbd pool=<each pool but vms>'
#   client.glance    mon 'profile rbd'  osd 'profile rbd pool=<each pool>' (vms too: see create)
set -euo pipefail

log() { printf '[ceph %s] %s\n' "$(basename "${DIR:-?}")" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ceph_cmd() { timeout 30 ceph -c "$DIR/ceph.conf" --connect-timeout 20 "$@"; }

DAEMONS=" ${CEPH_DAEMONS:-mon mgr osd} "
has() { [[ $DAEMONS == *" $1 "* ]]; }

pid_alive() {  # a zombie waiting to be reaped does not count
  local p
  [ -f "$1" ] || return 1
  p=$(cat "$1")
  kill -0 "$p" 2>/dev/null || return 1
  ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$p/stat" 2>/dev/null
}

write_conf() {
  local fsid=$1
  cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon initial members = a
mon host = [v2:$IP:${CEPH_MON_PORT_V2:-3300},v1:$IP:${CEPH_MON_PORT:-6789}]
public addr = $IP
cluster addr = $IP
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $DIR/keyring.\$name
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
log to stderr = false
err to stderr = false
mon cluster log file = $DIR/log/cluster.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 16
osd pool default pgp num = 16
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
auth allow insecure global id reclaim = false
mon data avail warn = 2
mon data avail crit = 1
paxos propose interval = ${CEPH_PAXOS_INTERVAL:-0.01}
rbd default clone format = 2
rbd default features = layering, exclusive-lock, object-map, fast-diff, deep-flatten
client mount timeout = 30
rados mon op timeout = 60
rados osd op timeout = 120

[mon]
mon data = $DIR/mon/\$cluster-\$id

[mgr]
mgr data = $DIR/mgr/\$cluster-\$id
keyring = $DIR/mgr/\$cluster-\$id/keyring
mgr initial modules = rbd_support

[osd]
osd data = $DIR/osd/\$cluster-\$id
keyring = $DIR/osd/\$cluster-\$id/keyring
osd objectstore = bluestore
bluestore block create = true
bluestore block size = ${CEPH_OSD_SIZE_BYTES}
osd memory target = ${CEPH_OSD_MEMORY_TARGET:-1073741824}
osd op num shards = 2
osd op num threads per shard = 2
bluestore fsck on mount = false
osd snap trim sleep = 0
EOF
}

size_bytes() {
  numfmt --from=iec "${1%B}"
}

create() {
  local fsid
  fsid=$(uuidgen)
  log "creating cluster fsid=$fsid mon=$IP osd=${CEPH_OSD_SIZE:-16G} (bluestore, sparse)"
  rm -rf "${DIR:?}"/{mon,mgr,osd,run,log} "$DIR"/keyring.* "$DIR/ceph.conf" "$DIR/.created"
  mkdir -p "$DIR"/{mon/ceph-a,mgr/ceph-x,run,log}
  write_conf "$fsid"
  ceph-authtool --create-keyring "$DIR/keyring.mon.a" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$DIR/keyring.client.admin" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$DIR/keyring.mon.a" --import-keyring "$DIR/keyring.client.admin" >/dev/null
  monmaptool --create --fsid "$fsid" \
    --addv a "[v2:$IP:${CEPH_MON_PORT_V2:-3300},v1:$IP:${CEPH_MON_PORT:-6789}]" "$DIR/run/monmap" >/dev/null
  ceph-mon -c "$DIR/ceph.conf" --mkfs -i a --monmap "$DIR/run/monmap" --keyring "$DIR/keyring.mon.a"
  start_mon
  wait_mon
  ceph_cmd auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
    -o "$DIR/mgr/ceph-x/keyring"
  start_mgr
  local uuid id
  uuid=$(uuidgen)
  id=$(ceph_cmd osd new "$uuid")
  mkdir -p "$DIR/osd/ceph-$id"
  ceph-osd -c "$DIR/ceph.conf" -i "$id" --no-mon-config --mkfs --mkkey --osd-uuid "$uuid" >>"$DIR/log/mkfs.log" 2>&1 \
    || die "ceph-osd --mkfs failed, see $DIR/log/mkfs.log"
  ceph_cmd auth add "osd.$id" osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' \
    -i "$DIR/osd/ceph-$id/keyring" >/dev/null 2>&1
  start_osd
  wait_osd
  # Clone v2 from unprotected snapshots needs mimic+ clients.
  ceph_cmd osd set-require-min-compat-client mimic --yes-i-really-mean-it >/dev/null 2>&1
  local pool osd_caps="" sep="" mgr_caps="" msep=""
  for pool in "${POOLS[@]}"; do
    ceph_cmd osd pool create "$pool" 16 16 >/dev/null 2>&1
    ceph_cmd osd pool application enable "$pool" rbd >/dev/null 2>&1
    rbd -c "$DIR/ceph.conf" pool init "$pool"
    osd_caps+="${sep}profile rbd pool=$pool"
    sep=", "
    # fastsnap's only mgr command is 'rbd task add flatten' of clones in Glance's pools, never of instance disks.
    [ "$pool" = vms ] && continue
    mgr_caps+="${msep}profile rbd pool=$pool"
    msep=", "
  done
  ceph_cmd auth get-or-create client.fastsnap mon 'profile rbd, allow command "mgr stat"' osd "$osd_caps" \
    mgr "$mgr_caps" \
    -o "$DIR/keyring.client.fastsnap"
  # Glance owns the images pool; it also reads and removes clones whose parent snapshot lives in vms (until they
  # are flattened). 'profile rbd-read-only pool=vms' would do for reading and detaching (it allows child_detach),
  # but not for purging the parent's trashed snapshot when the last clone goes: librbd opens the parent
  # read/write for that (EPERM) and the snapshot stays in vms, which nothing then purges (a parked disk too).
  ceph_cmd auth get-or-create client.glance mon 'profile rbd' osd "$osd_caps" \
    -o "$DIR/keyring.client.glance"
  chmod 600 "$DIR"/keyring.client.*   # secrets: for the stack's services (root), nobody else
  # Daemons this invocation does not own ran only for the creation: their owner starts them.
  has osd || { wait_clean; stop_daemons osd; }
  has mgr || stop_daemons mgr
  echo "$fsid" >"$DIR/.created"
  log "created"
}

start_mon() { pid_alive "$DIR/run/mon.a.pid" || ceph-mon -c "$DIR/ceph.conf" -i a; }
# Where the mgr and OSDs bind, when not on the monitor's address.
addr_args() {
  if [ -n "${CEPH_DAEMON_ADDR:-}" ]; then
    ADDR_ARGS=(--public-addr "$CEPH_DAEMON_ADDR" --cluster-addr "$CEPH_DAEMON_ADDR")
  else
    ADDR_ARGS=()
  fi
}
start_mgr() { addr_args; pid_alive "$DIR/run/mgr.x.pid" || ceph-mgr -c "$DIR/ceph.conf" -i x "${ADDR_ARGS[@]}"; }
start_osd() {
  local d id
  addr_args
  for d in "$DIR"/osd/ceph-*; do
    id=${d##*-}
    pid_alive "$DIR/run/osd.$id.pid" || ceph-osd -c "$DIR/ceph.conf" -i "$id" "${ADDR_ARGS[@]}" 2>>"$DIR/log/osd-start.log"
  done
}

wait_mon() {
  local i
  for i in $(seq 1 60); do
    ceph_cmd mon stat >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "monitor did not answer within 30 s (log: $DIR/log/mon.a.log)"
}

# Every OSD of DIR answers on its admin socket and is active (booted: the monitors know this incarnation).
osd_active() {
  local d
  for d in "$DIR"/osd/ceph-*; do
    timeout 10 ceph --admin-daemon "$DIR/run/osd.${d##*-}.asok" status 2>/dev/null | grep -q '"state": "active"' \
      || return 1
  done
}

wait_osd() {
  local i
  for i in $(seq 1 120); do
    if [ "$(ceph_cmd osd stat -f json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["num_up_osds"])' 2>/dev/null)" = 1 ] \
        && osd_active; then
      return 0
    fi
    sleep 0.5
  done
  die "OSD did not come up within 60 s (log: $DIR/log/)"
}

wait_created() {
  local i
  for i in $(seq 1 $((${CEPH_CREATE_WAIT:-600} * 2))); do
    [ -f "$DIR/.created" ] && return 0
    sleep 0.5
  done
  die "cluster in $DIR was not created within ${CEPH_CREATE_WAIT:-600} s (this invocation has no mon to create it)"
}

wait_clean() {
  local i
  for i in $(seq 1 120); do
    ceph_cmd pg stat 2>/dev/null | grep -q -E 'unknown|peering|creating|activating|down' || return 0
    sleep 0.5
  done
  die "placement groups not active within 60 s: $(ceph_cmd pg stat 2>&1)"
}

cmd_start() {
  if [ ! -f "$DIR/.created" ] && ! has mon; then
    wait_created
  fi
  if [ -f "$DIR/.created" ]; then
    if has mon; then start_mon; fi
    wait_mon
    if has mgr; then start_mgr; fi
    if has osd; then start_osd; wait_osd; fi
  else
    create
  fi
  if has osd; then wait_clean; fi
}

# stop_daemons TYPE...: stop the daemons of these types (mon, mgr, osd) by pid file and wait until they are gone
# (re-creating a cluster while old ones live gives "wrong fsid"). Sets STOPPED to how many were running.
stop_daemons() {
  local f pids=() p t
  for t in "$@"; do
    for f in "$DIR/run/$t".*.pid; do
      [ -f "$f" ] || continue
      p=$(cat "$f")
      if kill -0 "$p" 2>/dev/null; then
        kill "$p" 2>/dev/null || true
        pids+=("$p")
      fi
      rm -f "$f"
    done
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  STOPPED=${#pids[@]}
}

cmd_stop() {
  # shellcheck disable=SC2086  # word splitting intended
  stop_daemons $DAEMONS
  if [ "$STOPPED" -gt 0 ]; then log "stopped $STOPPED daemon(s)"; fi
}

cmd_status() {
  [ -f "$DIR/.created" ] || return 1
  if has mon; then pid_alive "$DIR/run/mon.a.pid" || return 1; fi
  if has mgr; then pid_alive "$DIR/run/mgr.x.pid" || return 1; fi
  local d
  if has osd; then
    for d in "$DIR"/osd/ceph-*; do pid_alive "$DIR/run/osd.${d##*-}.pid" || return 1; done
  fi
  ceph_cmd -s >/dev/null 2>&1
}

cmd_wait() {
  local f d
  local files=()
  if has mon; then files+=("$DIR/run/mon.a.pid"); fi
  if has mgr; then files+=("$DIR/run/mgr.x.pid"); fi
  if has osd; then for d in "$DIR"/osd/ceph-*; do files+=("$DIR/run/osd.${d##*-}.pid"); done; fi
  while true; do
    for f in "${files[@]}"; do
      pid_alive "$f" || { log "$(basename "$f" .pid) is gone"; exit 1; }
    done
    sleep 2
  done
}

cmd_export() {
  local dest=$1
  [ -f "$DIR/.created" ] || die "no cluster in $DIR"
  mkdir -p "$dest"
  cp "$DIR"/keyring.client.* "$dest/"
  cp "$DIR/.created" "$dest/fsid"
  {
    echo "# Client configuration of the cluster in $DIR (ceph-cluster.sh export)."
    # The [global] settings clients use; the daemons' paths and tunables stay behind.
    awk '/^\[/ { if (seen++) exit; print; next }
         /^(fsid|mon host|auth (cluster|service|client) required|rbd |client |rados )/ { print }' "$DIR/ceph.conf"
    printf 'keyring = %s/keyring.$name\n' "$dest"
  } >"$dest/ceph.conf.tmp"
  mv "$dest/ceph.conf.tmp" "$dest/ceph.conf"
}

action=${1:?usage: ceph-cluster.sh start|stop|status DIR [IP POOLS...]}
DIR=$(realpath -m "${2:?missing DIR}")
case $action in
  start)
    IP=${3:?missing IP}
    shift 3
    POOLS=("$@")
    [ "${#POOLS[@]}" -gt 0 ] || die "no pools given"
    CEPH_OSD_SIZE_BYTES=$(size_bytes "${CEPH_OSD_SIZE:-16G}")
    mkdir -p "$DIR"
    cmd_start
    ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  wait) cmd_wait ;;
  export) cmd_export "${3:?missing DEST}" ;;
  *) die "unknown action $action" ;;
esac
