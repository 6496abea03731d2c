"""The version of the installed fastsnap distribution, for ``fastsnap --version`` and ``fastsnap-api --version``.

It is read from the distribution's metadata (``importlib.metadata``), which the build writes from
``pyproject.toml``: the one place the version is kept, so a wheel, its sdist and what ``--version`` prints cannot
disagree.
"""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "fastsnap"


def version() -> str:
    """The installed distribution's version; ``unknown`` when fastsnap runs from a tree that was never installed
    (no metadata: e.g. ``PYTHONPATH=.``), since --version must not fail."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def version_string(prog: str) -> str:
    """What ``PROG --version`` prints: ``fastsnap 0.1.0``."""
    return f"{prog} {version()}"
