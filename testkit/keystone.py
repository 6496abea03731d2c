"""A Keystone session as one of the stack's users (password auth, domain Default): the one way the tests, the
benchmarks and the Nova host's clients log in, so that they agree on the domains and differ only in who they are."""

from __future__ import annotations

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3


def session(auth_url: str, user: str, password: str, project: str, timeout: float | None = None) -> ks_session.Session:
    """A session of ``user`` scoped to ``project`` (``timeout``: seconds per request, default keystoneauth1's)."""
    auth = v3.Password(auth_url=auth_url, username=user, password=password, project_name=project,
                       user_domain_name="Default", project_domain_name="Default")
    return ks_session.Session(auth=auth, timeout=timeout)
