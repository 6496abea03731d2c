"""Idempotently create the Nova part's flavor and the test guest's Glance images; write their ids for env.sh.

Run with the Nova venv after the guest was built (lib/guest/build OUT_DIR). Images are public, owned by admin:
  fastsnap-guest-kernel (aki), fastsnap-guest-ramdisk (ari)       in store fast
  fastsnap-guest, fastsnap-guest-remote, fastsnap-guest-cheap     raw root disk in stores fast, remote, cheap,
                                                                  with kernel_id, ramdisk_id, hw_qemu_guest_agent=yes
An image is reused when one of that name is active with the same guest file hash (property fastsnap_guest_sha256)
and properties; otherwise a new one is uploaded and the stale ones are deleted (when Glance lets us: an rbd image
that instance disks were cloned from stays until they are gone).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import glanceclient
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from novaclient import client as nova_client

FLAVOR = {"name": "fastsnap.tiny", "ram": 256, "vcpus": 1, "disk": 1}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--auth-url", required=True)
    ap.add_argument("--admin-password", required=True)
    ap.add_argument("--guest-dir", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()
    auth = v3.Password(auth_url=a.auth_url, username="admin", password=a.admin_password, project_name="admin",
                       user_domain_id="default", project_domain_id="default")
    sess = ks_session.Session(auth=auth, timeout=300)
    glance = glanceclient.Client("2", session=sess)
    nova = nova_client.Client("2.95", session=sess)
    files = json.loads((a.guest_dir / "build.json").read_text())["files"]
    t0 = time.monotonic()

    flavor = next((f for f in nova.flavors.list(is_public=None) if f.name == FLAVOR["name"]), None)
    if flavor is None:
        flavor = nova.flavors.create(FLAVOR["name"], FLAVOR["ram"], FLAVOR["vcpus"], FLAVOR["disk"], is_public=True)
        print(f"flavor {FLAVOR['name']} created: {flavor.id}")

    def ensure_image(name: str, file: str, disk_format: str, container_format: str, store: str,
                     **props: str) -> str:
        want = {"fastsnap_guest_sha256": files[file]["sha256"], **props}
        keep: Any = None
        stale = []
        for img in glance.images.list(filters={"name": name}):
            fits = (img["status"] == "active" and img.get("disk_format") == disk_format
                    and store in str(img.get("stores", "")).split(",")
                    and all(img.get(k) == v for k, v in want.items()))
            if fits and keep is None:
                keep = img
            else:
                stale.append(img["id"])
        if keep is None:
            keep = glance.images.create(name=name, disk_format=disk_format, container_format=container_format,
                                        visibility="public", **want)
            with open(a.guest_dir / file, "rb") as f:
                glance.images.upload(keep["id"], f, image_size=files[file]["bytes"], backend=store)
            keep = glance.images.get(keep["id"])
            if keep["status"] != "active":
                raise SystemExit(f"image {name} ({keep['id']}) is {keep['status']} after upload to {store}")
            print(f"image {name} uploaded to {store}: {keep['id']}")
        for image_id in stale:
            with contextlib.suppress(Exception):
                glance.images.delete(image_id)
                print(f"stale image {name} {image_id} deleted")
        return str(keep["id"])

    kernel = ensure_image("fastsnap-guest-kernel", "vmlinuz", "aki", "aki", "fast")
    ramdisk = ensure_image("fastsnap-guest-ramdisk", "initrd.img", "ari", "ari", "fast")
    props = {"kernel_id": kernel, "ramdisk_id": ramdisk, "hw_qemu_guest_agent": "yes"}
    root = {store: ensure_image(f"fastsnap-guest{suffix}", "root.img", "raw", "bare", store, **props)
            for store, suffix in (("fast", ""), ("remote", "-remote"), ("cheap", "-cheap"))}
    a.out.write_text(
        f"export FASTSNAP_NOVA_FLAVOR={FLAVOR['name']}\n"
        f"export FASTSNAP_NOVA_IMAGE={root['fast']}\n"
        f"export FASTSNAP_NOVA_IMAGE_REMOTE={root['remote']}\n"
        f"export FASTSNAP_NOVA_IMAGE_CHEAP={root['cheap']}\n"
        f"export FASTSNAP_NOVA_KERNEL_IMAGE={kernel}\n"
        f"export FASTSNAP_NOVA_RAMDISK_IMAGE={ramdisk}\n")
    print(f"nova seeded in {time.monotonic() - t0:.1f}s: flavor {FLAVOR['name']}, images {root}")


if __name__ == "__main__":
    main()
