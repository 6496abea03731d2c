"""The committed sample config is what oslo-config-generator makes from the options in the code."""

from __future__ import annotations

from pathlib import Path

from oslo_config import generator

from fastsnap import conf as fsconf

ROOT = Path(__file__).resolve().parents[2]


def test_sample_config_is_current(tmp_path: Path) -> None:
    out = tmp_path / "sample.conf"
    # in this process (a child interpreter would import everything again): the namespaces' entry points are the
    # installed ones either way
    generator.main(["--config-file", str(ROOT / "etc/oslo-config-generator/fastsnap.conf"),
                    "--output-file", str(out)])
    assert out.read_text() == (ROOT / "etc/fastsnap.conf.sample").read_text(), \
        "regenerate: oslo-config-generator --config-file etc/oslo-config-generator/fastsnap.conf"


def test_every_option_has_help() -> None:
    for group, opts in fsconf.list_opts():
        for opt in opts:
            assert opt.help, f"[{group}] {opt.name} has no help text"


def test_load_reads_file(tmp_path: Path) -> None:
    f = tmp_path / "f.conf"
    f.write_text("[snapshot]\ndefault_store = fast\nread_ahead = 4\n[ceph]\nuser = nova\n")
    conf = fsconf.load(str(f))
    assert conf.snapshot.default_store == "fast"
    assert conf.snapshot.read_ahead == 4
    assert conf.ceph.user == "nova"
