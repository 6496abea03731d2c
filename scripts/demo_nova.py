"""Body of ``scripts/demo --nova``: snapshots taken through Nova (``openstack server image create --wait``), with
nova-compute switched to fastsnap's hook and the fastsnap service on the compute host's unix socket.

Boots the test guest from store ``fast`` and snapshots it twice: as it is (fastsnap's clone path into ``fast``)
and with ``--property fastsnap_store=cheap`` (the stream path into the file store ``cheap``). Prints what
fastsnap's job says (path, store, reason, seconds, quiesce) and the image's status, then deletes the server and
the images, stops the service and switches nova-compute back to the driver it ran before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testkit.env import read_env
from testkit.novaapi import NovaAPI
from testkit.novahost import HOOK_DRIVER, RUN, FastsnapService, switch_driver, wait_counter


def openstack(env: dict[str, str], *args: str) -> tuple[float, str]:
    """The ``openstack`` CLI of the Nova venv as the member user ``demo``; (seconds, stdout)."""
    cli = os.path.join(env["FASTSNAP_TEST_NOVA_VENV"], "bin", "openstack")
    print(f"$ openstack {' '.join(args)}", flush=True)
    t0 = time.monotonic()
    out = subprocess.run([cli, *args], capture_output=True, text=True, env={**os.environ, **env}, check=False)
    secs = time.monotonic() - t0
    if out.returncode != 0:
        raise RuntimeError(f"openstack {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return secs, out.stdout


def main() -> int:
    env = read_env()
    before = env.get("FASTSNAP_TEST_NOVA_DRIVER", "libvirt.LibvirtDriver")
    print(f"== nova-compute: compute_driver {before} -> {HOOK_DRIVER} (ceph-test-env/up --nova)", flush=True)
    print(f"   {switch_driver(HOOK_DRIVER):.1f}s")
    env = read_env()
    cloud = NovaAPI(env)
    made: list[str] = []
    server: str | None = None
    rc = 1
    with tempfile.TemporaryDirectory(prefix="fastsnap-demo-nova-") as tmp:
        svc = FastsnapService(env, Path(tmp))
        try:
            print(f"\n== fastsnap service on {svc.socket}", flush=True)
            svc.start()
            name = f"demo-nova-{os.getpid()}"
            print(f"\n== boot the test guest (store fast) as {name}", flush=True)
            secs, out = openstack(env, "server", "create", "--flavor", env["FASTSNAP_NOVA_FLAVOR"], "--image",
                                  env["FASTSNAP_NOVA_IMAGE"], "--nic", "none", "--wait", "-f", "json", name)
            server = str(json.loads(out)["id"])
            domain = cloud.domain(server)
            agent_secs, value = wait_counter(env, domain)
            print(f"ACTIVE in {secs:.1f}s; guest agent answered {agent_secs:.1f}s later, counter {value}")
            rows = []
            for label, extra in (("clone path (store chosen by fastsnap: the base image's rbd store)", []),
                                 ("stream path (--property fastsnap_store=cheap)",
                                  ["--property", "fastsnap_store=cheap"])):
                print(f"\n== {label}", flush=True)
                secs, out = openstack(env, "server", "image", "create", "--wait", "-f", "json", *extra,
                                      "--name", f"{name}-snap", server)
                image_id = str(json.loads(out)["id"])
                made.append(image_id)
                img = cloud.image(image_id) or {}
                job = svc.job_for(image_id)
                if not job or job.get("state") != "done":
                    print(f"fastsnap did not take this snapshot (job: {job}); image {img.get('status')}")
                    return 1
                res = job.get("result") or {}
                print(f"image {image_id}: status {img.get('status')}, stores {img.get('stores')}, "
                      f"size {img.get('size')}")
                print(f"fastsnap job {job['id']}: path={res.get('path')} store={res.get('store')} "
                      f"seconds={res.get('seconds', 0):.2f} quiesced={res.get('quiesced')}")
                print(f"reason: {res.get('reason')}")
                print(f"`server image create --wait`: {secs:.1f}s")
                rows.append((res.get("path"), res.get("store"), res.get("seconds", 0.0), secs, img.get("status")))
            print("\n== summary (fastsnap's time / the whole `server image create --wait`)")
            for path, store, fs_secs, wall, status in rows:
                print(f"  {path:6s} -> {store:6s} {fs_secs:6.2f}s / {wall:6.1f}s  image {status}")
            rc = 0
        finally:
            print("\n== clean up", flush=True)
            if server:
                try:
                    cloud.delete_servers(only=server)
                except Exception as exc:
                    print(f"warning: server {server}: {exc}", file=sys.stderr)
            for image_id in made:
                try:
                    cloud.delete_image(image_id)
                except Exception as exc:
                    print(f"warning: image {image_id}: {exc}", file=sys.stderr)
            svc.stop()
            log = svc.log.read_text(errors="replace") if svc.log.exists() else ""
            if "Traceback" in log:
                print(f"fastsnap service log has a traceback:\n{log[-3000:]}", file=sys.stderr)
                rc = 1
            if before != HOOK_DRIVER:
                print(f"nova-compute: compute_driver back to {before} ({switch_driver(before):.1f}s)")
    print(f"(stack run dir {RUN})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
