"""gunicorn entry point for Keystone: oslo.config would otherwise parse gunicorn's own argv."""

import sys

sys.argv = sys.argv[:1]

from keystone.wsgi.api import application  # noqa: E402

__all__ = ["application"]
