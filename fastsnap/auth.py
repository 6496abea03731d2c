"""Acting on behalf of a user: the user's token plus fastsnap's service token, as Nova does.

Glance then applies the user's project to what it creates (the snapshot belongs to the instance's project)
while the service token's ``service`` role unlocks service-only calls such as registering an ``rbd://``
location. Without a user identity fastsnap acts as itself ("operator mode").
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import Any

from keystoneauth1 import access, service_token
from keystoneauth1 import exceptions as ksexc
from keystoneauth1 import loading as ks_loading
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
    # The service session's connection pool too: no new TCP (and TLS) connections to Glance per user.
    sess = ks_session.Session(auth=wrapped, session=service.session, verify=service.verify, cert=service.cert,
                              timeout=service.timeout)
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


# -- Keystone trusts: acting for the user again later (recover) ------------------------------------------------
#
# A snapshot taken for a user creates (and, unless undone, leaves) an image owned by the user's project, which
# fastsnap's own user can neither see nor delete. So that ``recover`` can roll such an operation forward or back
# after a crash, the run first has the user delegate its roles on that project to fastsnap's user with a
# Keystone trust (as Heat and Aodh do for deferred work), records the trust id in the journal, and deletes the
# trust once the operation is settled. Nothing beyond the user's own rights on that one project is delegated,
# the trust expires on its own, and Glance needs no extra policy.

IDENTITY = {"service_type": "identity", "interface": "public"}


# Keystone refuses a second trust with the same trustor, trustee, project, impersonation and expiry (its
# duplicate_trust_constraint; 409): two snapshots of one user's servers started in the same second would collide.
# The expiry carries microseconds (kept by PostgreSQL; MySQL's DATETIME keeps seconds), and a conflict is retried
# with the expiry moved by a random few minutes.
TRUST_ATTEMPTS = 6
TRUST_SHIFT_S = (1.0, 600.0)


def create_trust(user: ks_session.Session, service: ks_session.Session, ident: Identity,
                 hours: int) -> str:
    """Delegate the user's roles on its project to fastsnap's user (impersonating); returns the trust id."""
    roles = [r for r in ident.roles if r != "admin"] or list(ident.roles)
    if not ident.user_id or not ident.project_id or not roles:
        raise Forbidden("cannot create a trust: the user token names no user, project or role")
    trustee = service.get_user_id()
    expiry = _expiry(hours)
    conflict: ksexc.Conflict | None = None
    for _ in range(TRUST_ATTEMPTS):
        body = {"trust": {"trustor_user_id": ident.user_id, "trustee_user_id": trustee,
                          "project_id": ident.project_id, "impersonation": True, "expires_at": _isotime(expiry),
                          "roles": [{"name": r} for r in roles]}}
        try:
            resp = user.post("/OS-TRUST/trusts", json=body, endpoint_filter=IDENTITY)
            return str(resp.json()["trust"]["id"])
        except ksexc.Conflict as exc:
            conflict = exc
            expiry += random.uniform(*TRUST_SHIFT_S)  # spreading expiries, not a secret
        except (ksexc.ClientException, KeyError, ValueError) as exc:
            raise Forbidden(f"Keystone refused a trust for recovering this snapshot: {exc}") from exc
    raise Forbidden(f"Keystone refused a trust for recovering this snapshot: {conflict}") from conflict


def _expiry(hours: int) -> float:
    return time.time() + hours * 3600


def _isotime(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def trust_session(conf: Any, service: ks_session.Session, trust_id: str) -> ks_session.Session:
    """fastsnap's credentials scoped to a trust (acting as the trustor in its project), with fastsnap's service
    token beside it as for a user."""
    unscoped = dict.fromkeys(("project_id", "project_name", "project_domain_id", "project_domain_name",
                              "domain_id", "domain_name", "system_scope"))
    try:
        trusted = ks_loading.load_auth_from_conf_options(conf, "glance", trust_id=trust_id, **unscoped)
    except Exception as exc:  # a plugin without trust support: say so instead of failing obscurely
        raise Forbidden(f"cannot scope fastsnap's credentials to trust {trust_id}: {exc}") from exc
    if trusted is None or service.auth is None:
        raise Forbidden("fastsnap has no service credentials ([glance] auth options)")
    wrapped = service_token.ServiceTokenAuthWrapper(user_auth=trusted, service_auth=service.auth)
    sess = ks_session.Session(auth=wrapped, verify=service.verify, cert=service.cert, timeout=service.timeout)
    try:
        sess.get_token()
    except (ksexc.Unauthorized, ksexc.NotFound, ksexc.Forbidden) as exc:
        raise Forbidden(f"cannot act through trust {trust_id} (expired or deleted?): {exc}") from exc
    except ksexc.ClientException as exc:  # Keystone unreachable or failing: the next recover tries again
        raise Forbidden(f"cannot act through trust {trust_id}: Keystone: {type(exc).__name__}: {exc}") from exc
    return sess


def delete_trust(sess: ks_session.Session, trust_id: str) -> None:
    """Delete a trust (as its trustor, or through the trust itself); already gone counts as success."""
    try:
        sess.delete(f"/OS-TRUST/trusts/{trust_id}", endpoint_filter=IDENTITY)
    except ksexc.NotFound:
        return
    except ksexc.ClientException as exc:
        raise Forbidden(f"cannot delete trust {trust_id}: {exc}") from exc
