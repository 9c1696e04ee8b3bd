"""A/B two revisions of the C engine on whole models, robust to a shared, noisy machine.

    .venv/bin/python benchmarks/ab_engine.py HEAD~1 WORK model.xk [more.xk ...] --threads 1 --runs 300

Each revision (a git revision, or WORK for the working tree) is compiled into a shared library
(the sources and flags of CMakeLists.txt's x86-64 / aarch64 build), both are loaded side by side
by tests/c/ab_model.c and run each model alternately, run by run, in one process: phases of
a busy host hit both builds alike. Prints per model the medians and the paired ratio B/A
(median and quartiles over the pairs of runs; < 1: B is faster). Needs gcc and git.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Per-file ISA flags, as CMakeLists.txt sets them.
X86_FLAGS = {
    "bgemm-scalar.c": ["-mpopcnt"],
    "bgemm-avx2.c": ["-mavx2", "-mpopcnt"],
    "bgemm-avx512.c": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vpopcntdq", "-mpopcnt"],
    "fgemm-avx2.c": ["-mavx2", "-mfma"],
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
    args = ap.parse_args(argv)
    for m in args.models:
        if not Path(m).is_file():
            ap.error(f"model file not found: {m}")
    if not shutil.which(args.cc):
        ap.error(f"compiler {args.cc!r} not found")
    threads = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory(prefix="ab_engine_") as tmp:
        out = Path(tmp)
        libs = [build(args.rev_a, out, args.cc), build(args.rev_b, out, args.cc)]
        harness = out / "ab_model"
        subprocess.run([args.cc, "-O2", f"-I{ROOT / 'include'}", str(ROOT / "tests" / "c" / "ab_model.c"), "-o",
                        str(harness), "-ldl"], check=True)
        print(f"A = {args.rev_a}, B = {args.rev_b}; {args.runs} alternating runs each; B/A < 1: B faster")
        print(f"{'model':40s} {'threads':>7s} {'A median ms':>12s} {'B median ms':>12s} {'B/A paired':>22s}")
        for m in args.models:
            for t in threads:
                r = subprocess.run([str(harness), str(libs[0]), str(libs[1]), m, str(args.runs), str(t)],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    print(f"{m}: {r.stderr.strip()}", file=sys.stderr)
                    return 1
                d = json.loads(r.stdout)
                print(f"{Path(m).name:40s} {t:7d} {d['a_median_ms']:12.3f} {d['b_median_ms']:12.3f} "
                      f"{d['ratio_median']:8.3f} [{d['ratio_p25']:.3f}-{d['ratio_p75']:.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
