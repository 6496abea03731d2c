"""The adapter to Nova's compute API: the one place fastsnap talks to Nova. keystoneauth errors are translated
here into :mod:`fastsnap.errors`; none leaves this module.

fastsnap asks Nova one thing: the server a snapshot for a user names, *as that user* (the user's token, with
fastsnap's service token beside it), so that Nova's own policy decides whether the user may see it (a member sees
its project's servers, an admin any server, as for Nova's own createImage).
"""

from __future__ import annotations

from typing import Any

from keystoneauth1 import exceptions as ksexc
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session
from oslo_config import cfg

from fastsnap.conf.nova import GROUP
from fastsnap.errors import Forbidden, NotFound, NovaError


class ServerNotFound(NotFound):
    """Nova shows no such server to the caller (it does not exist, or belongs to a project the caller cannot
    see: Nova answers 404 to both, and so does fastsnap)."""

    kind = "server_not_found"


class Nova:
    """Nova's compute API through ``session`` (the caller's)."""

    def __init__(self, conf: cfg.ConfigOpts, session: ks_session.Session) -> None:
        self._adapter = ks_loading.load_adapter_from_conf_options(conf, GROUP, session=session)
        self._timeout = conf.nova.timeout

    def server(self, server_id: str) -> dict[str, Any]:
        """The server as Nova shows it to the session's user (``GET /servers/{id}``, microversion 2.1)."""
        try:
            resp = self._adapter.get(f"/servers/{server_id}", timeout=self._timeout)
        except ksexc.NotFound as exc:
            raise ServerNotFound(f"server {server_id} not found (Nova shows no such server to the caller's "
                                 f"project)") from exc
        except (ksexc.Unauthorized, ksexc.Forbidden) as exc:
            raise Forbidden(f"Nova refused to show server {server_id} to the caller: {exc}") from exc
        except ksexc.EndpointNotFound as exc:
            raise NovaError(f"cannot check who owns server {server_id}: no compute endpoint in the service "
                            f"catalogue ([nova] options): {exc}") from exc
        except ksexc.ClientException as exc:  # unreachable, timed out, 5xx
            raise NovaError(f"cannot check who owns server {server_id}: Nova: {type(exc).__name__}: {exc}") from exc
        try:
            server = resp.json()["server"]
        except (ValueError, KeyError, TypeError) as exc:
            raise NovaError(f"Nova's answer for server {server_id} is not a server: {resp.text[:200]!r}") from exc
        if not isinstance(server, dict):
            raise NovaError(f"Nova's answer for server {server_id} is not a server: {resp.text[:200]!r}")
        return server
