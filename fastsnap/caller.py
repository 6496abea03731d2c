"""Who a snapshot is taken for, as one object: the caller's credentials, resolved once into Glance as that caller
and the :class:`fastsnap.auth.Identity` it stands for.

Three kinds: fastsnap itself (operator mode, no credentials), a user's token (a trusted caller such as Nova's
hook, or the CLI's ``--user-token``), or a ready keystoneauth plugin (keystonemiddleware's ``keystone.token_auth``:
a user calling the REST service). ``verify_owner`` says whether the ownership check with Nova
(:mod:`fastsnap.ownership`) applies to a user's snapshot; only a trusted caller that checked may turn it off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keystoneauth1 import session as ks_session
from oslo_config import cfg

from fastsnap.auth import Identity, user_session
from fastsnap.glance import Glance


@dataclass
class Caller:
    """The caller of one request. Resolved on first use (:meth:`resolve`: Keystone is asked once, and only when
    the request gets that far); the service resolves it while accepting a request and hands the same object to the
    job."""

    user_token: str | None = field(default=None, repr=False)  # a secret: never in a log line
    user_auth: Any = field(default=None, repr=False)
    verify_owner: bool = True
    _acting: tuple[Glance, Identity] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def is_user(self) -> bool:
        """Credentials were given: the snapshot is for a user (else fastsnap acts as itself)."""
        return self.user_token is not None or self.user_auth is not None

    def resolve(self, conf: cfg.ConfigOpts, service: ks_session.Session,
                operator_glance: Glance) -> tuple[Glance, Identity]:
        """Glance as the caller (user token + service token), or ``operator_glance`` without credentials, and the
        identity; cached, so a second call asks Keystone nothing."""
        if self._acting is None:
            if not self.is_user:
                self._acting = (operator_glance, Identity("operator"))
            else:
                sess, ident = user_session(service, self.user_token, self.user_auth)
                self._acting = (Glance.from_conf(conf, sess), ident)
        return self._acting
