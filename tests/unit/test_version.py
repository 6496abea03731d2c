"""``fastsnap --version`` and ``fastsnap-api --version`` print the installed distribution's version (its metadata,
written from pyproject.toml), not a string kept by hand somewhere else."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest

from fastsnap import cli, version
from fastsnap.service import server

ROOT = Path(__file__).resolve().parents[2]


def _printed_version(parse: Callable[[list[str]], object], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        parse(["--version"])
    assert exc.value.code == 0
    return capsys.readouterr().out.strip()


def test_the_version_is_the_metadata_s_and_pyproject_s() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version.version() == metadata.version("fastsnap") == pyproject


def test_fastsnap_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _printed_version(cli.build_parser().parse_args, capsys) == f"fastsnap {metadata.version('fastsnap')}"


def test_fastsnap_api_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _printed_version(server.build_parser().parse_args, capsys) == \
        f"fastsnap-api {metadata.version('fastsnap')}"


def test_unknown_without_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert version.version_string("fastsnap") == "fastsnap unknown"
