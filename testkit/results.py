"""bench/RESULTS.md's marked sections: each benchmark owns a ``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->``
block and replaces it in place, so that one benchmark's run leaves the others' figures as they are.

Where the generated files live: RESULTS.md (and the hand-written NOTES.md) in the benchmark directory, the
JSON, text and pictures the benchmarks write in its ``results/`` subdirectory.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from testkit.env import ROOT

BENCH_DIR = str(ROOT / "bench")
RESULTS_SUBDIR = "results"


def results_dir(out_dir: str) -> str:
    """Where a benchmark with ``--out out_dir`` writes its JSON, text and pictures (made when missing)."""
    path = os.path.join(out_dir, RESULTS_SUBDIR)
    os.makedirs(path, exist_ok=True)
    return path


def read_saved(out_dir: str, name: str) -> Any:
    """The JSON a benchmark saved as ``out_dir``/results/``name``, or None when it saved none."""
    path = os.path.join(out_dir, RESULTS_SUBDIR, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def sections(text: str) -> list[tuple[str, str]]:
    """The ``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->`` blocks of a RESULTS.md, in order: (NAME, block)."""
    return [(m.group(1), m.group(0)) for m in
            re.finditer(r"<!-- ([a-z0-9_-]+):begin -->.*?<!-- \1:end -->", text, flags=re.S)]


def replace_section(text: str, name: str, block: str) -> str:
    """``text`` (a RESULTS.md) with its ``NAME`` block replaced by ``block`` (which carries the same markers), or
    with ``block`` appended when it has none."""
    old = dict(sections(text)).get(name)
    block = block.rstrip("\n")
    text = text.replace(old, block) if old else text.rstrip("\n") + "\n\n" + block
    return text if text.endswith("\n") else text + "\n"


def write_section(results_md: str | os.PathLike[str], name: str, block: str) -> None:
    """Replace (or append) the ``NAME`` block of the file ``results_md`` (made when missing)."""
    text = ""
    if os.path.exists(results_md):
        with open(results_md) as f:
            text = f.read()
    with open(results_md, "w") as f:
        f.write(replace_section(text, name, block))
