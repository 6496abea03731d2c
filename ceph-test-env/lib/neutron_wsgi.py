"""Neutron's API for gunicorn (FASTSNAP_WSGI_APP=neutron_wsgi with argv_wsgi).

Imports every Neutron DB model and configures the ORM mappers first: the API server alone (ML2 without agents or
service plugins) never loads e.g. the port-forwarding model, yet ``get_ports`` reads ``Port.port_forwardings``,
a backref that model adds.
"""

from sqlalchemy import orm

import neutron.db.migration.models.head  # noqa: F401  (all models, as neutron-db-manage loads them)

orm.configure_mappers()

from neutron.wsgi.api import application  # noqa: E402

__all__ = ["application"]
