"""Idempotently create the projects, users, roles and catalogue entries of the test stack.

Run with the stack's venv after `keystone-manage bootstrap`. Reads everything from arguments.
"""

from __future__ import annotations

import argparse
from typing import Any

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--auth-url", required=True)
    ap.add_argument("--admin-password", required=True)
    ap.add_argument("--service-password", required=True)
    ap.add_argument("--demo-password", required=True)
    ap.add_argument("--glance-url", required=True)
    # fastsnap's REST service (service type "fastsnap": not in OpenStack's service-types authority, the cloud
    # registers it), for `openstack fastsnap ...` (python-fastsnapclient).
    ap.add_argument("--fastsnap-url")
    # The Nova part (lib/nova.sh): its service users and catalogue entries, when given.
    ap.add_argument("--nova-url")
    ap.add_argument("--placement-url")
    ap.add_argument("--neutron-url")
    a = ap.parse_args()
    auth = v3.Password(auth_url=a.auth_url, username="admin", password=a.admin_password,
                       project_name="admin", user_domain_id="default", project_domain_id="default")
    s = ks_session.Session(auth=auth, timeout=30)
    ep = {"service_type": "identity", "interface": "public"}

    def find(kind: str, name: str, **flt: str) -> dict[str, Any] | None:
        params = {"name": name, **flt}
        items = s.get(f"/{kind}", endpoint_filter=ep, params=params).json()[kind]
        return items[0] if items else None

    def ensure(kind: str, one: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        found = find(kind, name)
        if found:
            return found
        obj: dict[str, Any] = s.post(f"/{kind}", endpoint_filter=ep, json={one: {"name": name, **body}}).json()[one]
        return obj

    roles = {r: ensure("roles", "role", r, {})["id"] for r in ("admin", "member", "reader", "service")}
    projects = {p: ensure("projects", "project", p, {"domain_id": "default"})["id"]
                for p in ("service", "demo", "demo2")}

    def user(name: str, password: str, project: str, role_names: tuple[str, ...]) -> None:
        uid = ensure("users", "user", name, {"domain_id": "default", "password": password,
                                             "default_project_id": projects[project]})["id"]
        for r in role_names:
            s.put(f"/projects/{projects[project]}/users/{uid}/roles/{roles[r]}", endpoint_filter=ep)

    user("glance", a.service_password, "service", ("admin", "service", "member", "reader"))
    user("fastsnap", a.service_password, "service", ("service", "member", "reader"))
    user("demo", a.demo_password, "demo", ("member", "reader"))
    user("demo2", a.demo_password, "demo2", ("member", "reader"))

    def service(name: str, kind: str, url: str) -> None:
        """The service and its public, internal and admin endpoints at url (replaced when the url changed)."""
        svc = find("services", name)
        if svc is None:
            svc = s.post("/services", endpoint_filter=ep,
                         json={"service": {"name": name, "type": kind, "enabled": True}}).json()["service"]
        existing = s.get("/endpoints", endpoint_filter=ep, params={"service_id": svc["id"]}).json()["endpoints"]
        have = {e["interface"]: e for e in existing}
        for iface in ("public", "internal", "admin"):
            if iface in have and have[iface]["url"] == url:
                continue
            if iface in have:
                s.delete(f"/endpoints/{have[iface]['id']}", endpoint_filter=ep)
            s.post("/endpoints", endpoint_filter=ep, json={"endpoint": {
                "service_id": svc["id"], "interface": iface, "url": url, "region_id": "RegionOne"}})

    service("glance", "image", a.glance_url)
    done = "projects service, demo, demo2; users glance, fastsnap, demo, demo2; image endpoint"
    if a.fastsnap_url:
        service("fastsnap", "fastsnap", a.fastsnap_url)
        done += "; fastsnap endpoint"
    if a.nova_url and a.placement_url and a.neutron_url:
        # Service users with the service role only: Placement's, Neutron's and Keystone's default policies grant
        # their service-to-service calls to it; nova's service token unlocks Glance's location API.
        for name in ("nova", "placement", "neutron"):
            user(name, a.service_password, "service", ("service",))
        service("nova", "compute", a.nova_url)
        service("placement", "placement", a.placement_url)
        service("neutron", "network", a.neutron_url)
        done += "; users nova, placement, neutron; compute, placement, network endpoints"
    print(f"keystone seeded: {done}")


if __name__ == "__main__":
    main()
