"""Regression guard: run the benches in quick mode and compare their ratios with bench/baseline.json.

``python bench/compare.py [--quick] [--only NAME ...] [--update]``

Runs each bench of ``BENCHES`` with its quick flags (small data, few repeats, CPU only; ``--quick``
is accepted and is the only mode), parses the dimensionless figures it prints (one small regex
parser per bench; the direction of each figure, lower or higher is better, is in the table) and
prints them against bench/baseline.json. A figure has regressed when it got at least 15 % worse:
lower-is-better when measured >= 1.15 x baseline, higher-is-better when measured <= 0.85 x baseline.
A bench whose optional tool is missing (pygrappa, bart, haproxy) is reported as "skipped: <reason>".
A bench's own exit status 1 (one of its targets fails) is not a break: quick data are far below the
targets' sizes, only the ratios against the baseline count here.

All eight benches finish in quick mode in well under 3 minutes together on a 2-CPU VM, so all run
by default (``DEFAULT``); ``--only NAME ...`` picks some. ``--update`` runs each bench twice and writes the mean of the
two runs into bench/baseline.json (merged over the benches not run), with the date and
``bench_core.machine_description()``. Quick data are small, so the ratios are noisier than the full
benches' figures: a bench with a flagged figure is run a second time at once and each of its figures
counts as the better of the two runs, so a flag has to stand two runs; it is then a reason to rerun
the full bench, not a verdict.

Exit status: 0 nothing regressed, 1 something regressed, 2 a bench broke (or could not be parsed).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
BASELINE = BENCH_DIR / "baseline.json"
THRESHOLD = 0.15
LOWER, HIGHER = "lower", "higher"
NUM = r"([0-9]+(?:\.[0-9]+)?)"


def _one(pattern: str, text: str) -> float:
    match = re.search(pattern, text, re.MULTILINE)
    if not match:
        raise ValueError(f"no line matches {pattern!r}")
    return float(match.group(1))


def parse_core(out: str) -> dict[str, float]:
    return {"(b)/(a)": _one(r"ratio \(b\)/\(a\) = " + NUM, out),
            "(c)/(a)": _one(r"ratio \(c\)/\(a\) = " + NUM, out),
            "peak RSS x data": _one(r"server peak RSS:.*= " + NUM + " x data", out),
            "v2/v1 ingest": _one(r"ingest rate v2/v1 = \(b\)/\(d\) = " + NUM, out)}


def parse_save(out: str) -> dict[str, float]:
    return {"save/plain": _one(r"^target save speed .* of plain\s+" + NUM, out),
            "end-to-end/plain": _one(r"^target end to end .* of plain\s+" + NUM, out),
            "save/floor": _one(r"max\(\(a\), \(c\)\) / \(b\): " + NUM, out)}


def parse_load(out: str) -> dict[str, float]:
    figures = {}
    rates: dict[str, list[tuple[int, float]]] = {}
    for mode, n, rate in re.findall(r"^\| (\w+) \| (\d+) \| [0-9.]+ \| " + NUM + r" \|", out, re.MULTILINE):
        rates.setdefault(mode, []).append((int(n), float(rate)))
    for mode, rows in rates.items():
        rows.sort()
        if len(rows) > 1:
            figures[f"{mode} sessions/s {rows[-1][0]}/{rows[0][0]}"] = rows[-1][1] / rows[0][1]
    for mode, ratio in re.findall(r"^\| (\w+) \| \d+ MB = " + NUM + " x data", out, re.MULTILINE):
        figures[f"{mode} peak RSS x data"] = float(ratio)
    if not figures:
        raise ValueError("no table rows")
    return figures


def parse_spiral(out: str) -> dict[str, float]:
    return {"(a)/(b) speed-up": _one(r"^speedup_a_over_b\s+" + NUM, out)}


def parse_bart(out: str) -> dict[str, float]:
    a = _one(r"^\(a\) by hand:\s+" + NUM, out)
    b = _one(r"^\(b\) module:\s+" + NUM, out)
    return {"(b)/(a)": b / a}


def parse_dashboard(out: str) -> dict[str, float]:
    return {"session time with/without browsers": _one(r"session time with / without browsers: " + NUM, out),
            "server CPU with/without": _one(r"server CPU: " + NUM, out)}


def parse_cluster(out: str) -> dict[str, float]:
    figures = {}
    for module, n, first, rate, span, median in re.findall(
            r"^\| (\w+) \| (\d+) / (\d+) instance\(s\) \| " + NUM + r" \| " + NUM + r" \| " + NUM + r" \|",
            out, re.MULTILINE):
        if module == "simplefft":
            # CPU-bound: on 2 CPUs more instances add no CPU, so its ratios are 1 +- noise (quick runs of
            # one code gave 0.75-1.5); the wait_* modules carry what a change to the cluster could move.
            continue
        figures[f"{module} {n}/{first} sessions/s"] = float(rate)
        figures[f"{module} {n}/{first} sessions/s (span)"] = float(span)
        figures[f"{module} {n}/{first} median session"] = float(median)
    if not figures:
        raise ValueError("no ratio rows")
    return figures


def parse_grappa(out: str) -> dict[str, float]:
    figures = {}
    for accel, name, speed, error in re.findall(
            r"^R=(\d+) ratio (\w+)/ours time " + NUM + r"x, NRMSE ours/\w+ " + NUM, out, re.MULTILINE):
        figures[f"R={accel} {name}/ours time"] = float(speed)
        figures[f"R={accel} NRMSE ours/{name}"] = float(error)
    if not figures:
        raise ValueError("no ratio lines")
    return figures


def _missing_module(name: str) -> str | None:
    return None if importlib.util.find_spec(name) else f"python package {name} not installed"


def _missing_bart() -> str | None:
    sys.path.insert(0, str(REPO_DIR / "modules"))
    try:
        import _bart
        _bart.find_bart()
    except Exception as exc:  # noqa: BLE001
        return f"bart not found ({exc})"
    return None


def _missing_haproxy() -> str | None:
    return None if shutil.which("haproxy") else "haproxy not on PATH"


PHANTOM = ["--matrix", "256", "--coils", "16"]
# name: (quick flags, parser, {figure: direction}, check for an optional tool -> reason or None)
BENCHES = {
    "bench_core": (PHANTOM + ["--repetitions", "4", "--repeats", "3", "--warmup", "1"], parse_core,
                   {"(b)/(a)": LOWER, "(c)/(a)": LOWER, "peak RSS x data": LOWER, "v2/v1 ingest": HIGHER}, None),
    "bench_save": (PHANTOM + ["--repetitions", "4", "--repeats", "3"], parse_save,
                   {"save/plain": HIGHER, "end-to-end/plain": HIGHER, "save/floor": HIGHER}, None),
    "bench_load": (["--matrix", "128", "--coils", "8", "--repetitions", "2", "--clients", "1,2", "--repeats", "1"],
                   parse_load, {"sessions/s": HIGHER, "peak RSS x data": LOWER}, None),
    "bench_spiral": (["--coils", "8", "--repeats", "3", "--warmup-s", "0.3", "--skip-session", "--gpu", "-1"],
                     parse_spiral, {"(a)/(b) speed-up": HIGHER}, None),
    "bench_dashboard": (["--matrix", "256", "--coils", "8", "--repetitions", "4", "--sessions", "2", "--browsers",
                         "10", "--repeats", "4"], parse_dashboard,
                        {"session time with/without browsers": LOWER, "server CPU with/without": LOWER}, None),
    "bench_grappa": (["--matrix", "128", "--coils", "8", "--repeats", "3", "--warmup", "1"],
                     parse_grappa, {"/ours time": HIGHER, "NRMSE ours/": LOWER},
                     lambda: _missing_module("pygrappa")),
    "bench_bart": (["--arms", "64", "--coils", "4", "--iterations", "20"], parse_bart, {"(b)/(a)": LOWER},
                   _missing_bart),
    "bench_cluster": (["--matrix", "128", "--coils", "4", "--repetitions", "1", "--clients", "6", "--repeats", "2",
                       "--wait", "0.3"], parse_cluster,
                      {"sessions/s": HIGHER, "median session": LOWER}, _missing_haproxy),
}
DEFAULT = list(BENCHES)


def direction(directions: dict[str, str], figure: str) -> str:
    """The direction of the longest key of ``directions`` that ``figure`` contains."""
    keys = [k for k in directions if k in figure]
    if not keys:
        raise KeyError(f"no direction for {figure!r}")
    return directions[max(keys, key=len)]


def regressed(value: float, base: float, better: str) -> bool:
    if better == LOWER:
        return value >= base * (1 + THRESHOLD)
    return value <= base * (1 - THRESHOLD)


def best(first: float, second: float, better: str) -> float:
    """The better of two measurements of one figure."""
    return min(first, second) if better == LOWER else max(first, second)


def run_bench(name: str) -> tuple[str, dict[str, float] | str, float]:
    """('ok', figures) / ('skipped', reason) / ('broken', reason), and the seconds it took."""
    flags, parse, _, check = BENCHES[name]
    reason = check() if check else None
    if reason:
        return "skipped", reason, 0.0
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(BENCH_DIR / f"{name}.py"), *flags], cwd=REPO_DIR,
                              capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "broken", "timed out after 600 s", time.perf_counter() - start
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return "broken", f"exit {done.returncode}: {' | '.join(tail)}", seconds
    try:
        return "ok", parse(done.stdout), seconds
    except ValueError as exc:
        return "broken", f"output not parsed: {exc}", seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="quick mode (the default and only mode)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), metavar="NAME",
                        help=f"benches to run (default: {' '.join(DEFAULT)}; all: {' '.join(BENCHES)})")
    parser.add_argument("--update", action="store_true", help="run each bench twice and write the mean into bench/baseline.json")
    args = parser.parse_args(argv)
    names = args.only or DEFAULT
    baseline = json.loads(BASELINE.read_text()) if BASELINE.is_file() else {"benches": {}}
    measured: dict[str, dict[str, float]] = {}
    confirmed: list[str] = []
    worst = 0
    started = time.perf_counter()
    print("| bench | figure | better | baseline | now | change | verdict |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        state, result, seconds = run_bench(name)
        if state != "ok":
            print(f"| {name} | | | | | | {state}: {result} |", flush=True)
            worst = max(worst, 2 if state == "broken" else 0)
            continue
        base_figures = baseline["benches"].get(name, {})
        flagged = any(regressed(v, base_figures[f], direction(BENCHES[name][2], f))
                      for f, v in result.items() if base_figures.get(f) is not None)
        if args.update or flagged:  # a baseline is the mean of two runs; a flag must stand a second run
            again_state, again, again_seconds = run_bench(name)
            seconds += again_seconds
            if again_state == "ok":
                result = {f: (v + again.get(f, v)) / 2 if args.update else
                          best(v, again.get(f, v), direction(BENCHES[name][2], f)) for f, v in result.items()}
                confirmed.append(name)
        measured[name] = result
        for figure, value in result.items():
            better = direction(BENCHES[name][2], figure)
            base = base_figures.get(figure)
            if base is None:
                verdict, change = "new (no baseline)", ""
            else:
                change = f"{100 * (value / base - 1):+.0f} %" if base else ""
                bad = regressed(value, base, better)
                verdict = "REGRESSED" if bad else "ok"
                if bad:
                    worst = max(worst, 1)
            base_text = "" if base is None else f"{base:.3f}"
            print(f"| {name} | {figure} | {better} | {base_text} | {value:.3f} | {change} | {verdict} |", flush=True)
        print(f"| {name} | ({seconds:.0f} s) | | | | | |", flush=True)
    if confirmed:
        how = "the mean of the two runs is written" if args.update else \
            "a figure was flagged in the first run; the better of the two runs is shown"
        print(f"\nrun twice ({how}): {', '.join(confirmed)}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s; exit {worst}")
    if args.update:
        sys.path.insert(0, str(BENCH_DIR))
        from bench_core import machine_description
        baseline["benches"].update(measured)
        baseline["date"] = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
        baseline["machine"] = machine_description()
        baseline["threshold"] = THRESHOLD
        BASELINE.write_text(json.dumps(baseline, indent=2, sort_keys=True) + "\n")
        print(f"wrote {BASELINE.relative_to(REPO_DIR)}")
    return worst


if __name__ == "__main__":
    sys.exit(main())
