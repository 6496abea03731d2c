"""Body of scripts/demo: both snapshot paths through the real CLI on the local stack."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import uuid

import glanceclient
import rados
import rbd
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3


def main() -> int:
    env = os.environ
    size = env.get("DEMO_DISK_SIZE", "2G")
    written = int(env.get("DEMO_WRITTEN_MB", "512")) << 20
    sess = ks_session.Session(auth=v3.Password(
        auth_url=env["OS_AUTH_URL"], username="fastsnap", password=env["FASTSNAP_TEST_SERVICE_PASSWORD"],
        project_name="service", user_domain_name="Default", project_domain_name="Default"))
    glance = glanceclient.Client("2", session=sess)
    cluster = rados.Rados(conffile=env["CEPH_CONF"], rados_id="admin")
    cluster.connect(timeout=30)
    vms = cluster.open_ioctx("vms")
    disk = f"demo-{uuid.uuid4().hex[:8]}_disk"
    made: list[str] = []
    fastsnap = os.path.join(os.path.dirname(sys.executable), "fastsnap")
    try:
        print(f"== stores as this host sees them ({fastsnap} stores)")
        subprocess.run([fastsnap, "stores"], check=True)
        nbytes = int(size[:-1]) << {"M": 20, "G": 30}[size[-1]]
        print(f"\n== instance disk vms/{disk}: {size} virtual, {written >> 20} MiB written")
        rbd.RBD().create(vms, disk, nbytes)
        with rbd.Image(vms, disk) as img:
            block = os.urandom(4 << 20)
            step = max(nbytes // max(written // len(block), 1), len(block))
            off = done = 0
            while done < written and off + len(block) <= nbytes:
                img.write(block, off)
                off += step
                done += len(block)
        bases = {}
        for store in ("fast", "remote"):
            img = glance.images.create(name=f"demo-base-{store}", disk_format="raw", container_format="bare",
                                       os_distro="debian")
            made.append(img["id"])
            glance.images.upload(img["id"], io.BytesIO(os.urandom(1 << 20)), backend=store)
            bases[store] = img["id"]
        results = []
        for label, store in (("clone path: base image in 'fast'", "fast"),
                             ("stream path: base image in 'remote' (another cluster)", "remote")):
            print(f"\n== {label}")
            t0 = time.monotonic()
            out = subprocess.run([fastsnap, "snapshot", "--disk", f"vms/{disk}", "--name", f"demo {store}",
                                  "--base-image", bases[store], "--json"], capture_output=True, text=True)
            wall = time.monotonic() - t0
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return out.returncode
            res = json.loads(out.stdout)
            made.append(res["image_id"])
            img = glance.images.get(res["image_id"])
            print(f"path={res['path']} store={res['store']} image={res['image_id']} status={img['status']}")
            print(f"reason: {res['reason']}")
            print(f"location: {res['location']}")
            print(f"fastsnap time {res['seconds']:.2f}s (CLI wall {wall:.2f}s); bytes streamed "
                  f"{res['bytes_streamed']}, read from Ceph {res['bytes_read']}")
            results.append(res)
        print("\n== summary")
        for r in results:
            print(f"  {r['path']:6s} -> {r['store']:6s} {r['seconds']:7.2f}s")
        return 0
    finally:
        for image_id in made:
            try:
                glance.images.delete(image_id)
            except Exception as exc:  # report, keep cleaning
                print(f"warning: could not delete {image_id}: {exc}", file=sys.stderr)
        try:
            with rbd.Image(vms, disk) as img:
                for s in list(img.list_snaps()):
                    if int(s.get("namespace", 0)) == 0:
                        img.remove_snap(s["name"])
            rbd.RBD().remove(vms, disk)
        except rbd.ImageNotFound:
            pass
        vms.close()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
