"""The OpenStackClient plugin (entry point ``openstack.cli.extension``): ``openstack`` loads this module, asks it
for its options and, on the first ``openstack fastsnap ...`` command, for a client (:func:`make_client`) built on
the session osc authenticated, with osc's ``--os-interface`` and ``--os-region-name``. The commands are the entry
points ``openstack.fastsnap.v1`` (``fastsnapclient.osc.v1``)."""

from __future__ import annotations

import argparse
from typing import Any, cast

from osc_lib import utils

from fastsnapclient import SERVICE_TYPE
from fastsnapclient.v1.client import Client

API_NAME = "fastsnap"   # the client manager's attribute (``self.app.client_manager.fastsnap``)
API_VERSION_OPTION = "os_fastsnap_api_version"
DEFAULT_API_VERSION = "1"
API_VERSIONS = {"1": "fastsnapclient.v1.client.Client"}


def make_client(instance: Any) -> Any:
    """The client for the chosen API version. The endpoint is the catalogue's, unless the cloud's configuration
    overrides it (``fastsnap_endpoint_override`` in clouds.yaml, or ``OS_FASTSNAP_ENDPOINT_OVERRIDE``)."""
    cls = utils.get_client_class(API_NAME, instance._api_version[API_NAME], API_VERSIONS)
    return cls(session=instance.session, interface=instance.interface, region_name=instance.region_name,
               endpoint_override=instance._cli_options.get_endpoint(SERVICE_TYPE))


def client(app: Any) -> Client:
    """The fastsnap client of a command's app (osc's client manager makes it on first use)."""
    return cast(Client, getattr(app.client_manager, API_NAME))


def build_option_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--os-fastsnap-api-version", metavar="<fastsnap-api-version>",
                        default=utils.env("OS_FASTSNAP_API_VERSION"),
                        help=f"fastsnap API version, default={DEFAULT_API_VERSION} (Env: OS_FASTSNAP_API_VERSION)")
    return parser
