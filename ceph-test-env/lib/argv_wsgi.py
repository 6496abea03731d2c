"""gunicorn entry point for an OpenStack WSGI application named by FASTSNAP_WSGI_APP=module[:attribute].

Nova, Placement and Neutron read their configuration when the module is imported; oslo.config would otherwise
parse gunicorn's own argv.
"""

import importlib
import os
import sys

sys.argv = sys.argv[:1]
_module, _, _attr = os.environ["FASTSNAP_WSGI_APP"].partition(":")
application = getattr(importlib.import_module(_module), _attr or "application")

__all__ = ["application"]
