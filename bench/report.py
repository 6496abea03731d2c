"""Turn a benchmark run (``results/results.json``) into ``RESULTS.md`` and ``results/time_vs_size.png``.

    python -m bench.report bench/results/results.json   # regenerate RESULTS.md and the plot from saved results
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from bench import load, nova
from bench.lib import GiB, MiB, gib, human_bytes
from testkit.results import BENCH_DIR, RESULTS_SUBDIR, results_dir, sections

MiB_150 = 150 * MiB
ORDER = ("floor", "fastsnap-clone", "fastsnap-clone-cli", "nova-direct", "fastsnap-stream", "ceiling-export",
         "ceiling-zeros", "nova-generic")


def _by_disk(rows: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    disks: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        disks.setdefault(r["disk"], {})[r["method"]] = r
    return list(disks.items())


def _label(r: dict[str, Any]) -> str:
    return f"{gib(r['written'])} / {gib(r['virtual'])}"


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


Disk = tuple[str, dict[str, dict[str, Any]]]


def _series(result: dict[str, Any]) -> tuple[list[Disk], list[Disk]]:
    """(series disks, thin disks): a thin disk has a virtual/written ratio other than the series factor."""
    factor = float(result.get("args", {}).get("virtual_factor", 2.0))
    series: list[Disk] = []
    thin: list[Disk] = []
    for disk, methods in _by_disk(result.get("rows", [])):
        any_row = next(iter(methods.values()))
        ratio = any_row["virtual"] / max(any_row["written"], 1)
        (series if abs(ratio - factor) < 0.01 * factor + 0.01 else thin).append((disk, methods))
    return series, thin


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    series, thin = _series(result)
    out: list[dict[str, Any]] = []

    def add(name: str, measured: str, ratio: str, met: bool | None, note: str = "") -> None:
        out.append({"target": name, "measured": measured, "ratio": ratio,
                    "met": "n/a" if met is None else ("**met**" if met else "**not met**"), "note": note})

    clone_disks = [(d, m) for d, m in series + thin if "fastsnap-clone" in m and "floor" in m]
    if clone_disks:
        over = [(m["fastsnap-clone"]["seconds"] - m["floor"]["seconds"], _label(m["floor"])) for _, m in clone_disks]
        worst = max(over)
        add("clone ≤ floor + 150 ms (every disk)",
            "; ".join(f"{lbl}: +{o * 1000:.0f} ms" for o, lbl in over), f"worst +{worst[0] * 1000:.0f} ms",
            worst[0] <= 0.150, "fastsnap-clone (in-process, warm, median) minus floor (median)")
        series_clone = [(d, m) for d, m in series if "fastsnap-clone" in m]
        if len(series_clone) >= 2 or thin:
            small = (series_clone or clone_disks)[0][1]["fastsnap-clone"]
            ends = [m["fastsnap-clone"] for _, m in ([series_clone[-1]] if series_clone else []) +
                    [(d, m) for d, m in thin if "fastsnap-clone" in m]]
            parts = [f"{_label(small)}: {small['seconds']:.3f} s"] + [
                f"{_label(e)}: {e['seconds']:.3f} s ({e['seconds'] / small['seconds']:.2f}x)" for e in ends]
            worst_dev = max(abs(e["seconds"] / small["seconds"] - 1) for e in ends)
            add("clone within ±20 % from smallest to largest disk", "; ".join(parts),
                f"max deviation {worst_dev * 100:.0f} %", worst_dev <= 0.20)
        big = [m for _, m in series if "nova-direct" in m and "fastsnap-clone" in m]
        if big:
            b = big[-1]
            r = _ratio(b["nova-direct"]["seconds"], b["fastsnap-clone"]["seconds"])
            add(f"clone ≥ 10x faster than Nova-style direct at {gib(b['floor']['written'])} written",
                f"nova-direct {b['nova-direct']['seconds']:.2f} s vs clone {b['fastsnap-clone']['seconds']:.3f} s"
                f" (CLI wall {_f(b['fastsnap-clone-cli'].get('wall')) if 'fastsnap-clone-cli' in b else '-'} s)",
                f"{r:.1f}x" if r else "-", bool(r and r >= 10))
    ratio_rows = result.get("ratio") or []
    if ratio_rows:
        s_best = min(r["seconds"] for r in ratio_rows if r["method"] == "fastsnap-stream")
        c_best = min(r["seconds"] for r in ratio_rows if r["method"] == "ceiling-export")
        r = c_best / s_best
        add("stream ≥ 95 % of the ceiling's throughput",
            f"{_label(ratio_rows[0])}, best of {len(ratio_rows) // 2} alternated runs: stream {s_best:.2f} s, "
            f"rbd export | curl {c_best:.2f} s", f"{r * 100:.0f} %", r >= 0.95,
            "throughput ratio = ceiling time / stream time (stream: whole CLI process)")
    stream_disks = [(d, m) for d, m in series if "fastsnap-stream" in m and "ceiling-export" in m]
    if stream_disks:
        per = [f"{_label(m['fastsnap-stream'])}: "
               f"{m['ceiling-export']['seconds'] / m['fastsnap-stream']['seconds'] * 100:.0f} %"
               for _, m in stream_disks]
        sb = stream_disks[-1][1]
        r = sb["ceiling-export"]["seconds"] / sb["fastsnap-stream"]["seconds"]
        add("stream vs ceiling, single runs per size (informative)", "; ".join(per), f"{r * 100:.0f} % at largest",
            None if ratio_rows else r >= 0.95)
    gen = [(d, m) for d, m in series if "fastsnap-stream" in m and "nova-generic" in m]
    if gen:
        per = [f"{_label(m['fastsnap-stream'])}: {m['nova-generic']['seconds'] / m['fastsnap-stream']['seconds']:.2f}x"
               for _, m in gen]
        gb = gen[-1][1]
        r = gb["nova-generic"]["seconds"] / gb["fastsnap-stream"]["seconds"]
        add("stream ≥ 1.5x faster than Nova-style generic", "; ".join(per), f"{r:.2f}x at largest", r >= 1.5)
    fs_rows = [r for r in result.get("rows", []) + ratio_rows
               if r["method"] in ("fastsnap-stream", "fastsnap-clone-cli") and r.get("peak_rss")]
    if fs_rows:
        worst_rss = max(fs_rows, key=lambda r: r["peak_rss"])
        add("peak RSS ≤ 150 MiB at every size", f"max {human_bytes(worst_rss['peak_rss'])} ({worst_rss['method']} "
            f"{_label(worst_rss)})", f"{worst_rss['peak_rss'] / MiB_150:.2f}x of the limit",
            worst_rss["peak_rss"] <= MiB_150)
        worst_w = max(fs_rows, key=lambda r: r["local_write_bytes"] or 0)
        gen_w = [m["nova-generic"]["local_write_bytes"] for _, m in gen]
        add("0 bytes of local disk", f"max {human_bytes(worst_w['local_write_bytes'])} written by the fastsnap "
            f"process ({worst_w['method']}); Nova generic: {human_bytes(max(gen_w)) if gen_w else '-'}",
            "0 bytes of image data", worst_w["local_write_bytes"] == 0,
            "what the fastsnap process writes is its SQLite journal (WAL, synchronous=full) and log, no image data")
    st = [r for r in result.get("rows", []) + ratio_rows if r["method"] == "fastsnap-stream"]
    if st:
        ok = all((r["osd_read_bytes"] or 0) <= r["written"] * 1.01 + 4 * MiB for r in st)
        desc = "; ".join(f"{_label(r)}: {human_bytes(r['osd_read_bytes'])} read, {r['osd_read_ops']} ops"
                         for r in st if "round" not in r.get("extra", {}) or r["extra"]["round"] == 0)
        add("holes not read from the OSDs", desc, "OSD bytes read / written ≤ 1.01", ok,
            "OSD perf counters op_r / op_r_out_bytes (ceph daemon osd.N perf dump) around the process")
    conc = result.get("concurrency") or []
    for mode in ("cli", "in-process"):
        rows = {c["n"]: c for c in conc if c["mode"] == mode}
        if 1 in rows and len(rows) > 1:
            n_max = max(rows)
            r = rows[n_max]["wall"] / rows[1]["wall"]
            add(f"{n_max} concurrent clone snapshots ≤ 3x one ({mode})",
                ", ".join(f"N={n}: {rows[n]['wall']:.2f} s" for n in sorted(rows)), f"{r:.2f}x", r <= 3.0)
    return out


def _md_table(rows: Sequence[dict[str, Any]], cols: Sequence[tuple[str, str]]) -> str:
    head = "| " + " | ".join(h for _, h in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(str(r.get(k, "")) if r.get(k) is not None else "-" for k, _ in cols) + " |"
            for r in rows]
    return "\n".join([head, sep, *body])


def markdown(result: dict[str, Any], notes: str = "") -> str:
    series, thin = _series(result)
    facts = result.get("machine", {})
    lines = ["# fastsnap benchmarks", "",
             f"Generated by `scripts/bench` ({result.get('started', '?')}, {result.get('duration_s', '?')} s). "
             "Every number below was measured in that one run, on the same disks; regenerate with `scripts/bench` "
             "(`--quick` for a few-minute run).", "",
             f"Machine: {facts.get('cpus')} CPUs ({facts.get('cpu_model')}), {facts.get('memory')} RAM, kernel "
             f"{facts.get('kernel')}, disk {facts.get('disk')}; {facts.get('ceph', '').split('(')[0].strip()} "
             f"(one bluestore OSD on a sparse file), Glance {facts.get('glance')} (glance_store "
             f"{facts.get('glance_store')}, gunicorn 2 workers), python-glanceclient "
             f"{facts.get('python_glanceclient')}, {facts.get('qemu_img')}. Load average at start "
             f"{_load(facts.get('loadavg'))}, at end {_load(facts.get('loadavg_end'))}.", "",
             "**Caveat:** the machine is shared: other sessions' test suites run at the same time on the same two "
             "cores, so absolute times are noisy (a few runs were visibly disturbed). Ratios measured close together "
             "are more trustworthy than absolute numbers.", "",
             "## Targets", "",
             _md_table(targets(result), [("target", "target"), ("measured", "measured"), ("ratio", "ratio"),
                                         ("met", "met?"), ("note", "how")]), ""]
    clone_rows = []
    for _, m in series + thin:
        if "fastsnap-clone" not in m:
            continue
        fl, cl = m["floor"], m["fastsnap-clone"]
        cli = m.get("fastsnap-clone-cli", {})
        nd = m.get("nova-direct", {})
        flat = [x.get("background_flatten_s") for x in cl.get("extra", {}).get("results", [])
                if x.get("background_flatten_s") is not None]
        clone_rows.append({
            "disk": _label(fl), "floor": _f(fl["seconds"], 3), "clone": _f(cl["seconds"], 3),
            "runs": ", ".join(f"{x:.3f}" for x in cl.get("runs", [])),
            "over": f"+{(cl['seconds'] - fl['seconds']) * 1000:.0f} ms",
            "cli": _f(cli.get("seconds"), 3), "cli_wall": _f(cli.get("wall"), 2),
            "direct": _f(nd.get("seconds"), 2),
            "flatten": _f(nd.get("extra", {}).get("steps", {}).get("flatten"), 2),
            "speedup": _f(_ratio(nd.get("seconds"), cl["seconds"]), 1) + "x" if nd else "-",
            "bg": _f(max(flat), 1) if flat else "-",
        })
    if clone_rows:
        lines += ["## Clone family (seconds; written / virtual)", "",
                  "floor = 2 RBD snapshot creations + 1 clone (librbd, connected). clone = `Fastsnap.snapshot()` "
                  "in-process (warm client, median of the runs listed). CLI = `fastsnap snapshot --json` "
                  "(its own `seconds`, and the process wall time including Python start-up and authentication). "
                  "Nova direct = queued image → temp snapshot + protect → clone → **synchronous flatten** → "
                  "remove temp snapshot → `snap` + protect → location API → active. bg flatten = time after "
                  "fastsnap returned until its background mgr flatten finished (not on the request path).", "",
                  _md_table(clone_rows, [("disk", "disk"), ("floor", "floor"), ("clone", "clone"),
                                         ("runs", "clone runs"), ("over", "clone - floor"), ("cli", "CLI"),
                                         ("cli_wall", "CLI wall"), ("direct", "Nova direct"),
                                         ("flatten", "of which flatten"), ("speedup", "direct / clone"),
                                         ("bg", "bg flatten")]), ""]
    stream_rows = []
    for _, m in series + thin:
        if "fastsnap-stream" not in m:
            continue
        s = m["fastsnap-stream"]
        ce, z, g = m.get("ceiling-export", {}), m.get("ceiling-zeros", {}), m.get("nova-generic", {})
        same = s.get("extra", {}).get("checksum") == ce.get("extra", {}).get("checksum") if ce else None
        stream_rows.append({
            "disk": _label(s), "stream": _f(s["seconds"]), "mbs": f"{s['virtual'] / s['seconds'] / 1e6:.0f}",
            "ceil": _f(ce.get("seconds")), "zeros": _f(z.get("seconds")), "gen": _f(g.get("seconds")),
            "of_ceil": f"{ce['seconds'] / s['seconds'] * 100:.0f} %" if ce else "-",
            "vs_gen": f"{g['seconds'] / s['seconds']:.2f}x" if g else "-",
            "rss": human_bytes(s.get("peak_rss")), "disk_w": human_bytes(s.get("local_write_bytes")),
            "gen_w": human_bytes(g.get("local_write_bytes")) if g else "-",
            "osd": f"{human_bytes(s.get('osd_read_bytes'))} / {s.get('osd_read_ops')}",
            "osd_ce": f"{human_bytes(ce.get('osd_read_bytes'))} / {ce.get('osd_read_ops')}" if ce else "-",
            "osd_g": f"{human_bytes(g.get('osd_read_bytes'))} / {g.get('osd_read_ops')}" if g else "-",
            "gcpu": _f(s.get("extra", {}).get("cpu_s", {}).get("glance"), 1),
            "gcpu_ce": _f(ce.get("extra", {}).get("cpu_s", {}).get("glance"), 1) if ce else "-",
            "same": "yes" if same else ("no" if same is False else "-"),
        })
    if stream_rows:
        lines += ["## Stream family (seconds; into the file store `cheap`)", "",
                  "stream = `fastsnap snapshot --store cheap` process wall time. ceiling = `rbd export vms/disk - | "
                  "curl -T -` into the same store; zeros = `head -c SIZE /dev/zero | curl -T -`. Nova generic = "
                  "`qemu-img convert -t none -O raw rbd:...` to a local file + `images.upload` to the default store. "
                  "OSD = bytes / read ops the OSD served during the run (`ceph daemon osd.0 perf dump`). "
                  "Glance CPU = CPU seconds of Glance's gunicorn processes during the run. "
                  "same = stream and ceiling images have the same checksum.", "",
                  _md_table(stream_rows, [("disk", "disk"), ("stream", "stream"), ("mbs", "MB/s"),
                                          ("ceil", "ceiling"), ("zeros", "zeros"), ("gen", "Nova generic"),
                                          ("of_ceil", "stream / ceiling thr."), ("vs_gen", "generic / stream"),
                                          ("rss", "fastsnap peak RSS"), ("disk_w", "fastsnap local disk"),
                                          ("gen_w", "generic local disk"), ("osd", "OSD (stream)"),
                                          ("osd_ce", "OSD (export)"), ("osd_g", "OSD (qemu-img)"),
                                          ("gcpu", "Glance CPU (stream)"), ("gcpu_ce", "Glance CPU (ceiling)"),
                                          ("same", "same")]), ""]
    ratio_rows = result.get("ratio") or []
    if ratio_rows:
        lines += ["## Stream vs ceiling, alternated on one disk", "",
                  _md_table([{"round": r["extra"].get("round"), "method": r["method"], "disk": _label(r),
                              "s": _f(r["seconds"]), "mbs": f"{r['virtual'] / r['seconds'] / 1e6:.0f}",
                              "g": _f(r["extra"].get("cpu_s", {}).get("glance"), 1),
                              "c": _f(r["extra"].get("cpu_s", {}).get("client"), 1),
                              "rss": human_bytes(r.get("peak_rss"))} for r in ratio_rows],
                            [("round", "round"), ("method", "method"), ("disk", "disk"), ("s", "seconds"),
                             ("mbs", "MB/s"), ("g", "Glance CPU s"), ("c", "client CPU s"),
                             ("rss", "peak RSS")]), ""]
    conc = result.get("concurrency") or []
    if conc:
        lines += ["## Concurrent clone snapshots of different disks", "",
                  "cli = N `fastsnap snapshot` processes started at once; in-process = N threads of one process, "
                  "each with its own warm `Fastsnap` client (what a long-running service would do). "
                  "`[snapshot] max_concurrent = 64` in the bench's config copy.", "",
                  _md_table(conc, [("mode", "mode"), ("n", "N"), ("wall", "wall s"),
                                   ("max_seconds", "slowest s"), ("mean_seconds", "mean s"),
                                   ("failed", "failed")]), ""]
    prof = result.get("profile")
    if prof:
        lines += ["## Where the stream path's time goes", "",
                  f"One stream of {prof['disk']} in-process under pyinstrument: {prof['wall']} s "
                  f"({prof['mb_s']} MB/s). CPU seconds over that interval: fastsnap {prof['cpu_s'].get('fastsnap')} "
                  f"(utilisation {prof['cpu_util'].get('fastsnap')}), Glance {prof['cpu_s'].get('glance')} "
                  f"({prof['cpu_util'].get('glance')}), OSD {prof['cpu_s'].get('osd')} "
                  f"({prof['cpu_util'].get('osd')}). fastsnap threads: "
                  + ", ".join(f"{k} {v}" for k, v in prof.get("fastsnap_threads_cpu_s", {}).items()) + ".", "",
                  "```", *prof.get("top", []), "```", "",
                  "(full profile in `bench/results/profile_stream.txt`)", ""]
        pc = prof.get("clone")
        if pc:
            lines += ["## Where the clone path's time goes", "",
                      f"One clone-path snapshot (warm client) under pyinstrument: {pc['wall']} s.", "",
                      "```", *pc.get("top", []), "```", "", "(full profile in `bench/results/profile_clone.txt`)", ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += ["## Files", "",
              "In `results/`: `results.json` (every measurement, with per-step times and counters), "
              "`time_vs_size.png`, `profile_stream.txt`, `profile_clone.txt`; beside this file `NOTES.md` (the "
              "analysis above, kept by hand). "
              "Code: `bench/methods.py` (the methods), `bench/run.py` (orchestration), "
              "`bench/report.py` (this file), `scripts/bench` (stack + run).", ""]
    return "\n".join(lines)


def _load(v: Any) -> str:
    try:
        return "/".join(f"{x:.1f}" for x in v)
    except TypeError:
        return "?"


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, thin = _series(result)
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    for method in ORDER:
        pts = [(m[method]["written"] / GiB, m[method]["seconds"]) for _, m in series if method in m]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=method)
    for _, m in thin:
        for method in ("fastsnap-clone", "nova-direct", "floor"):
            if method in m:
                r = m[method]
                ax.scatter([r["written"] / GiB], [r["seconds"]], marker="x", color="black")
                ax.annotate(f"{method}\n{gib(r['written'])}/{gib(r['virtual'])} thin",
                            (r["written"] / GiB, r["seconds"]), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")
    ax.set_xlabel("data written on the disk (GiB); virtual size = written x "
                  f"{result.get('args', {}).get('virtual_factor', 2)}")
    ax.set_ylabel("seconds (log)")
    ax.set_yscale("log")
    ax.set_title("Snapshot time vs written size (one run, same disks)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_all(result: dict[str, Any], out_dir: str) -> None:
    """``out_dir``/RESULTS.md (with ``out_dir``/NOTES.md) and, in its results/, results.json and the plot."""
    data = results_dir(out_dir)
    with open(os.path.join(data, "results.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=True, default=str)
    notes = ""
    notes_path = os.path.join(out_dir, "NOTES.md")
    if os.path.exists(notes_path):
        with open(notes_path) as f:
            notes = f.read()
    results_md = os.path.join(out_dir, "RESULTS.md")
    old = ""
    if os.path.exists(results_md):
        with open(results_md) as f:
            old = f.read()
    # Sections other benchmarks keep between markers survive a regeneration: the service under load (bench.load)
    # and through Nova (bench.nova) are redrawn from their JSON, the others (e.g. bench.freeze) kept as they are.
    redrawn = {"load": load.saved_section(out_dir), "nova": nova.saved_section(out_dir)}
    with open(results_md, "w") as f:
        f.write(markdown(result, notes))
        for name, text in sections(old):
            text = redrawn.pop(name, "") or text
            f.write("\n" + text.rstrip("\n") + "\n")
        for text in redrawn.values():
            if text:
                f.write("\n" + text.rstrip("\n") + "\n")
    plot(result, os.path.join(data, "time_vs_size.png"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.report [OUT/results/results.json]``: RESULTS.md again in OUT (default: bench)."""
    args = list(sys.argv[1:] if argv is None else argv)
    path = args[0] if args else os.path.join(BENCH_DIR, RESULTS_SUBDIR, "results.json")
    with open(path) as f:
        result = json.load(f)
    write_all(result, os.path.dirname(os.path.dirname(os.path.abspath(path))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
