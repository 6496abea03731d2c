"""Acting on behalf of a user: the user's token plus fastsnap's service token, as Nova does.

Glance then applies the user's project to what it creates (the snapshot belongs to the instance's project)
while the service token's ``service`` role unlocks service-only calls such as registering an ``rbd://``
location. Without a user identity fastsnap acts as itself ("operator mode").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from keystoneauth1 import access, service_token
from keystoneauth1 import exceptions as ksexc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from keystoneauth1.identity.access import AccessInfoPlugin

from fastsnap.errors import Forbidden


@dataclass(frozen=True)
class Identity:
    """Who a snapshot is taken for."""

    mode: str                      # "user" or "operator"
    user_id: str | None = None
    project_id: str | None = None
    roles: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "user_id": self.user_id, "project_id": self.project_id,
                "roles": list(self.roles)}


def validate_token(service: ks_session.Session, token: str) -> access.AccessInfo:
    """Validate a user token with Keystone (fastsnap's service role allows it); returns its access info."""
    try:
        resp = service.get("/auth/tokens", headers={"X-Subject-Token": token},
                           endpoint_filter={"service_type": "identity", "interface": "public"},
                           authenticated=True)
    except (ksexc.NotFound, ksexc.Unauthorized) as exc:
        raise Forbidden("the user token is invalid or expired") from exc
    except ksexc.ClientException as exc:
        raise Forbidden(f"cannot validate the user token with Keystone: {exc}") from exc
    return access.create(resp=resp, body=resp.json())


def user_session(service: ks_session.Session, token: str | None = None,
                 user_auth: Any | None = None) -> tuple[ks_session.Session, Identity]:
    """A session that sends the user's token (X-Auth-Token) and fastsnap's (X-Service-Token).

    ``user_auth`` is a ready keystoneauth plugin (e.g. keystonemiddleware's ``keystone.token_auth``);
    otherwise ``token`` is validated and used as it is, with the catalogue Keystone returned for it.
    """
    if service.auth is None:
        raise Forbidden("fastsnap has no service credentials ([glance] auth options)")
    ref: access.AccessInfo | None
    if user_auth is None:
        if not token:
            raise Forbidden("no user token given")
        ref = validate_token(service, token)
        user_auth = AccessInfoPlugin(ref, auth_url=getattr(service.auth, "auth_url", None))
    else:
        ref = user_auth.get_access(service) if hasattr(user_auth, "get_access") else None
    if ref is not None and not ref.project_id:
        raise Forbidden("the user token is not scoped to a project")
    wrapped = service_token.ServiceTokenAuthWrapper(user_auth=user_auth, service_auth=service.auth)
    sess = ks_session.Session(auth=wrapped, verify=service.verify, cert=service.cert, timeout=service.timeout)
    ident = Identity("user", ref.user_id if ref else None, ref.project_id if ref else None,
                     tuple(ref.role_names or ()) if ref else ())
    return sess, ident


def token_from_env() -> str:
    """A project-scoped token for the user described by the standard ``OS_*`` variables."""
    env = os.environ
    try:
        auth = v3.Password(auth_url=env["OS_AUTH_URL"], username=env["OS_USERNAME"], password=env["OS_PASSWORD"],
                           project_name=env.get("OS_PROJECT_NAME"), project_id=env.get("OS_PROJECT_ID"),
                           user_domain_name=env.get("OS_USER_DOMAIN_NAME", "Default"),
                           project_domain_name=env.get("OS_PROJECT_DOMAIN_NAME", "Default"))
    except KeyError as exc:
        raise Forbidden(f"--user-from-env needs {exc.args[0]} in the environment") from exc
    try:
        token = ks_session.Session(auth=auth, timeout=30).get_token()
    except ksexc.ClientException as exc:
        raise Forbidden(f"cannot get a token for OS_USERNAME={env['OS_USERNAME']}: {exc}") from exc
    if not token:
        raise Forbidden(f"Keystone gave no token for OS_USERNAME={env['OS_USERNAME']}")
    return str(token)
