"""The containerized stack runs fastsnap from its installed wheel, not from a source tree (issue 27): the fastsnap
image installs the wheel scripts/build-dists made (the artifact scripts/check-packages checks), so the suite that
runs against this stack tests what is shipped."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata

from testkit.stack import Stack

# Run by the service container's Python (/opt/venv, first on its PATH): where fastsnap and the running service's
# command come from, and how the distribution was installed (PEP 610 direct_url.json: the wheel's file URL).
PROBE = """
import json, os, sysconfig
from importlib import metadata
import fastsnap
def argv(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode() for a in f.read().split(b"\\0") if a]
    except OSError:  # gone meanwhile
        return []
dist = metadata.distribution("fastsnap")
print(json.dumps({
    "file": fastsnap.__file__, "purelib": sysconfig.get_paths()["purelib"], "version": dist.version,
    "direct_url": json.loads(dist.read_text("direct_url.json") or "{}"),
    "service": [argv(p) for p in os.listdir("/proc") if p.isdigit() and "serve" in argv(p)],
    "source_tree": os.path.exists("/src"),
}))
"""


def test_the_service_runs_from_the_installed_wheel(stack: Stack) -> None:
    cid = stack.services.container("fastsnap")
    out = subprocess.run(["docker", "exec", cid, "python", "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=60)
    got = json.loads(out.stdout)
    assert got["file"].startswith(got["purelib"] + "/fastsnap/"), got
    assert got["purelib"].startswith("/opt/venv/"), got
    assert got["direct_url"]["url"].startswith("file://") and got["direct_url"]["url"].endswith(".whl"), got
    assert not got["source_tree"], got
    assert got["version"] == metadata.version("fastsnap"), got
    # The process serving the suite's requests is that installation's console script (the venv's python running
    # /opt/venv/bin/fastsnap ... serve).
    assert len(got["service"]) == 1, got
    python, script = got["service"][0][:2]
    assert python.startswith("/opt/venv/bin/python") and script == "/opt/venv/bin/fastsnap", got
