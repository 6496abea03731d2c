"""The Glance API versions each endpoint supports, asked once per process.

``GET /versions`` answers the same for the life of a Glance deployment, and fastsnap asks it before choosing how
to register a location (the 2.17 location API or the image PATCH) and whether to read an image's locations: once
per endpoint, shared by every client the process makes (the service's user sessions included), not once per
snapshot. A cache, not a Glance call: the adapter (fastsnap.glance) asks Glance when this has no answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class KnownVersions:
    """Glance endpoint -> the API versions it supports, filled on first use."""

    def __init__(self) -> None:
        self._known: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def get(self, endpoint: str, ask: Callable[[], set[str]]) -> set[str]:
        """The endpoint's versions, from ``ask()`` the first time (two racing first askers both ask; the answers
        are the same)."""
        with self._lock:
            known = self._known.get(endpoint)
        if known is None:
            known = ask()
            with self._lock:
                self._known[endpoint] = known
        return known


VERSIONS = KnownVersions()  # the process's
