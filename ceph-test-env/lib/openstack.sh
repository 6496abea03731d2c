# Keystone and Glance under gunicorn, on PostgreSQL (sourced by up/down).
KS_DIR=$RUN/keystone
GL_DIR=$RUN/glance

keystone_start() {
  mkdir -p "$KS_DIR"/{fernet-keys,credential-keys,log}
  cat >"$KS_DIR/keystone.conf" <<CONF
[DEFAULT]
log_file = $KS_DIR/log/keystone.log
[database]
connection = $(pg_url keystone)
[token]
provider = fernet
expiration = 7200
[fernet_tokens]
key_repository = $KS_DIR/fernet-keys
[credential]
key_repository = $KS_DIR/credential-keys
[cache]
enabled = true
backend = dogpile.cache.memory
[identity]
password_hash_rounds = 4
CONF
  local km=("$VENV/bin/keystone-manage" --config-file "$KS_DIR/keystone.conf")
  if [ ! -f "$KS_DIR/.bootstrapped" ]; then
    log "keystone: db_sync, fernet keys, bootstrap"
    {
      "${km[@]}" db_sync &&
      "${km[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" &&
      "${km[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" &&
      "${km[@]}" bootstrap --bootstrap-password "$ADMIN_PASSWORD" --bootstrap-region-id RegionOne \
        --bootstrap-admin-url "$KEYSTONE_URL" --bootstrap-internal-url "$KEYSTONE_URL" \
        --bootstrap-public-url "$KEYSTONE_URL"
    } >"$KS_DIR/log/manage.log" 2>&1 || die "keystone set-up failed (log: $KS_DIR/log/manage.log)"
  fi
  if ! pid_alive "$KS_DIR/gunicorn.pid"; then
    log "keystone: starting on $KEYSTONE_BIND"
    rm -f "$KS_DIR/gunicorn.pid"  # stale: gunicorn refuses to start while its pid still exists (e.g. a zombie)
    OS_KEYSTONE_CONFIG_FILES="$KS_DIR/keystone.conf" PYTHONPATH="$ENV_DIR/lib" \
      "$VENV/bin/gunicorn" --no-control-socket -D -p "$KS_DIR/gunicorn.pid" -b "$KEYSTONE_BIND" \
      -w 2 --threads 4 --timeout 120 --keep-alive "$GUNICORN_KEEPALIVE" --error-logfile "$KS_DIR/log/gunicorn.log" keystone_wsgi:application \
      || die "keystone did not start (log: $KS_DIR/log/gunicorn.log)"
  fi
  wait_http "$KEYSTONE_URL" 60 keystone "$KS_DIR/log/gunicorn.log"
  # Seeded once, and again when the seed or the catalogue's URLs changed (a stack from before the fastsnap
  # endpoint gets it on its next `up`; the seed is idempotent).
  local seeded
  seeded="$(sha256sum <"$ENV_DIR/lib/keystone_seed.py" | cut -c1-16) $GLANCE_URL $FASTSNAP_URL"
  if [ ! -f "$KS_DIR/.bootstrapped" ] || [ "$(cat "$KS_DIR/.seeded" 2>/dev/null)" != "$seeded" ]; then
    "$VENV/bin/python" "$ENV_DIR/lib/keystone_seed.py" --auth-url "$KEYSTONE_URL" \
      --admin-password "$ADMIN_PASSWORD" --service-password "$SERVICE_PASSWORD" \
      --demo-password "$DEMO_PASSWORD" --glance-url "$GLANCE_URL" --fastsnap-url "$FASTSNAP_URL" \
      >>"$KS_DIR/log/manage.log" 2>&1 || die "keystone seeding failed (log: $KS_DIR/log/manage.log)"
    if [ -f "$KS_DIR/.bootstrapped" ]; then
      # Keystone's workers cache the catalogue (10 min): HUP replaces them, so new tokens carry the new endpoint.
      kill -HUP "$(cat "$KS_DIR/gunicorn.pid")"
      sleep 2
      wait_http "$KEYSTONE_URL" 60 keystone "$KS_DIR/log/gunicorn.log"
    fi
    touch "$KS_DIR/.bootstrapped"
    echo "$seeded" >"$KS_DIR/.seeded"
  fi
}

rbd_store_section() {  # name cluster-dir description
  cat <<CONF
[$1]
rbd_store_pool = images
rbd_store_user = glance
rbd_store_ceph_conf = $2/ceph.conf
rbd_store_chunk_size = 8
rados_connect_timeout = 10
store_description = $3
CONF
}

glance_start() {
  mkdir -p "$GL_DIR"/{etc,images,staging,tasks,locks,log}
  cp "$VENV/etc/glance/glance-api-paste.ini" "$GL_DIR/etc/glance-api-paste.ini"
  local before
  before=$(cat "$GL_DIR/etc/glance-api.conf" 2>/dev/null || true)
  cat >"$GL_DIR/etc/glance-api.conf" <<CONF
[DEFAULT]
log_file = $GL_DIR/log/glance-api.log
enabled_backends = fast:rbd, cheap:file, remote:rbd
worker_self_reference_url = $GLANCE_URL
do_secure_hash = $GLANCE_SECURE_HASH
show_multiple_locations = $GLANCE_SHOW_MULTIPLE_LOCATIONS
# gunicorn workers: $GLANCE_WORKERS (here so that a change restarts Glance)
# Nova (images_type = rbd) clones an image's rbd disk only when it sees the image's location: in Nova 34 from
# "locations" (show_multiple_locations, deprecated) or "direct_url"; otherwise it downloads the image.
show_image_direct_url = True
# copy-image (admin): copies an active image into more stores, as operators of multistore clouds do; the delta
# path (issue 16) clones the base image's copy in the target store.
enabled_import_methods = [glance-direct,web-download,copy-image]
[database]
connection = $(pg_url glance)
[glance_store]
default_backend = cheap
$(rbd_store_section fast "$RUN/ceph-a" "Ceph cluster A (instance disks' cluster), pool images")
[cheap]
filesystem_store_datadir = $GL_DIR/images
store_description = Local file store (default)
$(rbd_store_section remote "$RUN/ceph-b" "Ceph cluster B (another cluster), pool images")
[os_glance_staging_store]
filesystem_store_datadir = $GL_DIR/staging
[os_glance_tasks_store]
filesystem_store_datadir = $GL_DIR/tasks
[oslo_concurrency]
lock_path = $GL_DIR/locks
[taskflow_executor]
engine_mode = $GLANCE_TASKFLOW_ENGINE
max_workers = $GLANCE_TASKFLOW_WORKERS
[paste_deploy]
flavor = keystone
$(keystone_authtoken_section glance)
CONF
  if [ ! -f "$GL_DIR/.synced" ]; then
    log "glance: db_sync"
    "$VENV/bin/glance-manage" --config-dir "$GL_DIR/etc" db_sync >"$GL_DIR/log/manage.log" 2>&1 \
      || die "glance db_sync failed (log: $GL_DIR/log/manage.log)"
    touch "$GL_DIR/.synced"
  fi
  if pid_alive "$GL_DIR/gunicorn.pid" && [ "$before" != "$(cat "$GL_DIR/etc/glance-api.conf")" ]; then
    log "glance: configuration changed, restarting"
    stop_pidfile "$GL_DIR/gunicorn.pid" glance
  fi
  if ! pid_alive "$GL_DIR/gunicorn.pid"; then
    log "glance: starting on $GLANCE_BIND (stores fast, cheap (default), remote)"
    rm -f "$GL_DIR/gunicorn.pid"
    OS_GLANCE_CONFIG_DIR="$GL_DIR/etc" "$VENV/bin/gunicorn" --no-control-socket -D -p "$GL_DIR/gunicorn.pid" \
      -b "$GLANCE_BIND" -w "$GLANCE_WORKERS" --threads 8 --timeout 600 --keep-alive "$GUNICORN_KEEPALIVE" --error-logfile "$GL_DIR/log/gunicorn.log" \
      glance.wsgi.api:application || die "glance did not start (log: $GL_DIR/log/gunicorn.log)"
  fi
  wait_http "$GLANCE_URL/versions" 90 glance "$GL_DIR/log/gunicorn.log"
}

openstack_stop() {
  stop_pidfile "$GL_DIR/gunicorn.pid" glance
  stop_pidfile "$KS_DIR/gunicorn.pid" keystone
}
