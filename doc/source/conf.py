# fastsnap documentation: Sphinx configuration. Built by scripts/docs (sphinx-build -W: warnings are errors).
from __future__ import annotations

import os
import sys
from importlib import metadata
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, ROOT)

# The CLI reference imports fastsnap.cli, which imports the whole API and with it the Ceph bindings. Those exist only
# as Debian packages (python3-rados, python3-rbd) and are needed only to run fastsnap, not to document it: where they
# are missing (.venv-docs is a plain venv), they are mocked while fastsnap.cli is imported here.
try:
    import rados  # noqa: F401
    import rbd  # noqa: F401
except ImportError:
    from sphinx.ext.autodoc.mock import mock

    with mock(["rados", "rbd"]):
        import fastsnap.cli  # noqa: F401

# -- Project ----------------------------------------------------------------------------------------------------------

project = "fastsnap"
copyright = "fastsnap contributors, Apache-2.0"
try:
    release = metadata.version("fastsnap")
except metadata.PackageNotFoundError:  # not installed: the source tree on sys.path only
    release = "0.1.0"
version = ".".join(release.split(".")[:2])

extensions = [
    "openstackdocstheme",
    "oslo_config.sphinxext",  # .. show-options:: (the configuration reference, from the oslo.config.opts entry point)
    "sphinxarg.ext",  # .. argparse:: (the CLI reference, from fastsnap.cli.build_parser)
    "fastsnap_openapi",  # .. fastsnap-openapi:: (the REST API reference, from fastsnap.service.openapi.DOCUMENT)
    "cliff.sphinxext",  # .. autoprogram-cliff:: (the `openstack fastsnap` reference, from python-fastsnapclient)
]

root_doc = "index"
exclude_patterns = ["_build"]
templates_path: list[str] = []
pygments_style = "native"
# Quotes and ellipses only: "--option" in the CLI and option help must stay two hyphens, not an en dash.
smartquotes_action = "qe"
# Files outside doc/source that pages link to (the build copies them, see the :download: role).
DOWNLOADS = {
    "bench-results": "bench/RESULTS.md",
    "alert-rules": "etc/prometheus/fastsnap-alerts.yml",
    "alert-tests": "etc/prometheus/fastsnap-alerts.test.yml",
    "dashboard": "etc/grafana/fastsnap-dashboard.json",
}
rst_epilog = "".join(f".. |{name}| replace:: :download:`{path} </../../{path}>`\n" for name, path in DOWNLOADS.items())

# -- cliff.sphinxext ------------------------------------------------------------------------------------------------
# cliff's output options, the same on every command: doc/source/cli/openstack.rst says them once (as
# python-openstackclient's own documentation does).
autoprogram_cliff_ignored = ["--help", "--format", "--column", "--max-width", "--fit-width", "--print-empty",
                             "--format-config-file", "--noindent", "--prefix", "--quote", "--sort-column",
                             "--sort-ascending", "--sort-descending"]

# -- openstackdocstheme ----------------------------------------------------------------------------------------------

html_theme = "openstackdocs"
# fastsnap is not tracked on Launchpad or StoryBoard: no "report a bug" links. The theme needs a repository name
# (it appears only in an HTML comment and in the bug links' script, which is left out without a bug project).
openstackdocs_repo_name = "fastsnap/fastsnap"
openstackdocs_bug_project = ""
openstackdocs_use_storyboard = False
openstackdocs_auto_name = False  # the project name is `project` above
openstackdocs_auto_version = False  # no pbr: `release` above
openstackdocs_pdf_link = False
html_title = f"fastsnap {release}"
html_last_updated_fmt = "%Y-%m-%d"
html_static_path: list[str] = []

# -- Sources a page is generated from -----------------------------------------------------------------------------
# Sphinx rebuilds a page when its .rst changes; these pages are generated from code, so they also depend on it
# (an incremental build then picks up a changed option, argument or API call).
GENERATED_FROM = {
    "configuration/config": ["fastsnap/conf"],
    "configuration/sample": ["etc/fastsnap.conf.sample"],
    "cli/index": ["fastsnap/cli.py", "fastsnap/cli_output.py"],
    "cli/openstack": ["python-fastsnapclient/fastsnapclient/osc/v1"],
}


def _note_sources(app: Any, docname: str, source: list[str]) -> None:
    for rel in GENERATED_FROM.get(docname, []):
        path = os.path.join(ROOT, rel)
        files = [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".py")] \
            if os.path.isdir(path) else [path]
        for f in files:
            app.env.note_dependency(f)


def setup(app: Any) -> None:
    app.connect("source-read", _note_sources)
