"""fastsnap's REST service for compute hosts (``fastsnap serve``, WSGI ``fastsnap.wsgi:application``)."""
