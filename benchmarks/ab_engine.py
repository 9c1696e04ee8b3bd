"""A/B two revisions of the C engine on whole models, robust to a shared, noisy machine.

    .venv/bin/python benchmarks/ab_engine.py HEAD~1 WORK model.xk [more.xk ...] --threads 1 --runs 300

Each revision (a git revision, or WORK for the working tree) is compiled into a shared library
(the sources and flags of CMakeLists.txt's x86-64 / aarch64 build), both are loaded side by side
by tests/c/ab_model.c and run each model alternately, run by run, in one process: phases of
a busy host hit both builds alike. Prints per model the medians (min-max) and the paired ratio
B/A (median and quartiles over the pairs of runs; < 1: B is faster). With --out BASE the
comparison is also appended to BASE.md and BASE.json (one section per invocation, with the
machine and date; the project's record: benchmarks/results/ab_engine). Needs gcc and git.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _host import machine

ROOT = Path(__file__).resolve().parents[1]

# Per-file ISA flags, as CMakeLists.txt sets them.
X86_FLAGS = {
    "bgemm-scalar.c": ["-mpopcnt"],
    "bgemm-avx2.c": ["-mavx2", "-mpopcnt"],
    "bgemm-avx512.c": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vpopcntdq", "-mpopcnt"],
    "fgemm-avx2.c": ["-mavx2", "-mfma"],
    "fgemm-avx512.c": ["-mavx512f", "-mfma"],
    "qgemm-avx512.c": ["-mavx512f", "-mavx512bw", "-mavx512vnni"],
    "qgemm-avx2.c": ["-mavx2", "-mfma"],
}


def sources(tree: Path) -> list[Path]:
    files = sorted(tree.glob("csrc/*/*.c")) + sorted(tree.glob("csrc/ukernels/*/*.c"))
    x86 = platform.machine() in ("x86_64", "AMD64")
    keep = []
    for f in files:
        name = f.name
        if x86 and "neon" in name:
            continue
        if not x86 and any(isa in name for isa in ("avx2", "avx512")):
            continue
        keep.append(f)
    return keep


def build(rev: str, out: Path, cc: str) -> Path:
    """The engine of `rev` as a shared library at out/<safe rev>.so."""
    tree = Path(tempfile.mkdtemp(prefix="ab_src_", dir=out))
    if rev.upper() == "WORK":
        for part in ("csrc", "include"):
            shutil.copytree(ROOT / part, tree / part)
    else:
        archive = subprocess.run(["git", "archive", rev, "csrc", "include"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    x86 = platform.machine() in ("x86_64", "AMD64")
    defs = ["-DXK_HAVE_AVX2", "-DXK_HAVE_AVX512"] if x86 else ["-DXK_HAVE_NEON"]
    base = [cc, "-O3", "-fPIC", "-ffp-contract=off", *defs, f"-I{tree / 'include'}", f"-I{tree / 'csrc'}"]

    def compile_one(src: Path) -> Path:
        obj = src.with_suffix(".o")
        extra = X86_FLAGS.get(src.name, []) if x86 else []
        subprocess.run([*base, *extra, "-c", str(src), "-o", str(obj)], check=True)
        return obj

    with ThreadPoolExecutor() as ex:
        objs = list(ex.map(compile_one, sources(tree)))
    lib = out / f"{rev.replace('/', '_').replace('~', '-').replace('^', '-')}.so"
    subprocess.run([cc, "-shared", "-o", str(lib), *map(str, objs), "-lpthread", "-lm"], check=True)
    return lib


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev_a")
    ap.add_argument("rev_b")
    ap.add_argument("models", nargs="+", help=".xk files")
    ap.add_argument("--threads", default="1", help="comma-separated thread counts")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--cc", default="gcc")
    ap.add_argument("--out", help="append the results to OUT.md and OUT.json (e.g. benchmarks/results/ab_engine)")
    ap.add_argument("--title", default="", help="a heading for the --out section")
    args = ap.parse_args(argv)
    for m in args.models:
        if not Path(m).is_file():
            ap.error(f"model file not found: {m}")
    if not shutil.which(args.cc):
        ap.error(f"compiler {args.cc!r} not found")
    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    if min(threads) < 1 or args.runs < 2:
        ap.error("--threads needs counts >= 1 and --runs >= 2")
    for rev in (args.rev_a, args.rev_b):
        if rev.upper() != "WORK" and subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                                                     cwd=ROOT, capture_output=True).returncode != 0:
            ap.error(f"not a git revision (or WORK): {rev!r}")
    with tempfile.TemporaryDirectory(prefix="ab_engine_") as tmp:
        out = Path(tmp)
        libs = [build(args.rev_a, out, args.cc), build(args.rev_b, out, args.cc)]
        harness = out / "ab_model"
        subprocess.run([args.cc, "-O2", f"-I{ROOT / 'include'}", str(ROOT / "tests" / "c" / "ab_model.c"), "-o",
                        str(harness), "-ldl"], check=True)
        print(f"A = {args.rev_a}, B = {args.rev_b}; {args.runs} alternating runs each; B/A < 1: B faster")
        rows = []
        for m in args.models:
            for t in threads:
                r = subprocess.run([str(harness), str(libs[0]), str(libs[1]), m, str(args.runs), str(t)],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    print(f"{m}: {r.stderr.strip()}", file=sys.stderr)
                    return 1
                rows.append({"model": Path(m).name, **json.loads(r.stdout)})
    lines = ["| model | threads | A median [min-max] ms | B median [min-max] ms | B/A paired median [p25-p75] |",
             "|---|---|---|---|---|"]
    for d in rows:
        lines.append(f"| {d['model']} | {d['threads']} | {d['a_median_ms']:.3f} [{d['a_min_ms']:.3f}-{d['a_max_ms']:.3f}] "
                     f"| {d['b_median_ms']:.3f} [{d['b_min_ms']:.3f}-{d['b_max_ms']:.3f}] "
                     f"| {d['ratio_median']:.3f} [{d['ratio_p25']:.3f}-{d['ratio_p75']:.3f}] |")
    print("\n".join(lines))
    if args.out:
        write_results(Path(args.out), args, rows, lines)
    return 0


def write_results(base: Path, args, rows: list[dict], lines: list[str]) -> None:
    """Append one section to base.md and one record to base.json (a list)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    rec = {"date": datetime.date.today().isoformat(), "machine": machine(), "a": args.rev_a, "b": args.rev_b,
           "title": args.title, "runs": args.runs, "rows": rows}
    jpath, mpath = base.with_suffix(".json"), base.with_suffix(".md")
    records = json.loads(jpath.read_text()) if jpath.exists() else []
    records.append(rec)
    jpath.write_text(json.dumps(records, indent=1))
    head = "" if mpath.exists() else (
        "# Engine A/B (benchmarks/ab_engine.py)\n\nTwo builds of the C engine loaded into one process and run "
        "alternately, run by run, on the same model file (random weights, batch 1). Times: median [min-max] "
        "over the runs; B/A: median and quartiles of the per-pair ratios (< 1: B faster). Identical builds read "
        "0.995-1.008 on this machine.\n")
    section = [f"\n## {args.title or (args.rev_a + ' vs ' + args.rev_b)}", "",
               f"A = `{args.rev_a}`, B = `{args.rev_b}`; {rec['machine']}; {rec['date']}; {args.runs} runs each.", "",
               *lines, ""]
    with mpath.open("a") as fh:
        fh.write(head + "\n".join(section))
    print(f"appended to {mpath}")


if __name__ == "__main__":
    sys.exit(main())
