"""What bounds the float stems' 6 x 16 FMA micro-kernel on this host (x86-64, AVX2 + FMA).

    .venv/bin/python benchmarks/float_loop_bound.py [--rounds 31] [--reps 60000] [--out BASE]

Compiles benchmarks/float_loop_bound.c (gcc -O2 -mavx2 -mfma) and runs register-blocked FMA loops
with their data in L1: the kernel's own loop (6 broadcasts + 2 panel loads per 12 FMAs), the
same loop with the inputs or the panel held in registers, other tile shapes and other ways to
broadcast the inputs. Each variant is timed right after a pure 12-FMA register loop, round
after round, and reported as its FMA rate over the pure loop's in the same round (median
[min-max] over the rounds): 1.0 is as fast as the FMA pipes allow, so a shared host's slow
phases hit both sides alike. Writes BASE.md and BASE.json (default:
benchmarks/results/float_loop_bound). Needs gcc.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _host import machine

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--reps", type=int, default=60000, help="passes over the K = 96 steps per timing")
    ap.add_argument("--out", default=str(HERE / "results" / "float_loop_bound"))
    args = ap.parse_args()
    if args.rounds < 1 or args.reps < 1:
        ap.error("--rounds and --reps must be >= 1")
    if platform.machine() not in ("x86_64", "AMD64"):
        print(f"error: needs an x86-64 CPU with AVX2 + FMA, this is {platform.machine()}", file=sys.stderr)
        return 2
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    if " avx2" not in flags or " fma" not in flags:
        print("error: this CPU lacks AVX2 or FMA", file=sys.stderr)
        return 2
    cc = shutil.which("gcc")
    if not cc:
        print("error: gcc not found", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "float_loop_bound"
        subprocess.run([cc, "-O2", "-mavx2", "-mfma", str(HERE / "float_loop_bound.c"), "-o", str(exe)], check=True)
        out = subprocess.run([str(exe), str(args.rounds), str(args.reps)], check=True, capture_output=True, text=True)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    for r in rows:
        r["median"] = statistics.median(r["ratios"])
        r["min"], r["max"] = min(r["ratios"]), max(r["ratios"])

    base = Path(args.out)
    base.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine(), "date": datetime.date.today().isoformat(), "rounds": args.rounds,
            "reps": args.reps, "compiler": subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]}
    lines = [
        "# What bounds the float 6 x 16 FMA micro-kernel",
        "",
        f"Machine: {meta['machine']}; {meta['date']}; {meta['compiler']}, -O2 -mavx2 -mfma; "
        f"`benchmarks/float_loop_bound.py --rounds {args.rounds} --reps {args.reps}`.",
        "",
        "Register-blocked FMA loops with their data in L1 (K = 96 steps per pass). Each variant is "
        "timed right after a pure 12-FMA register loop, round after round; the figure is its FMA rate "
        "over the pure loop's in the same round, median [min-max] over the rounds (1.0: as fast as the "
        "FMA pipes allow). The first row is the loop of `xk_fconv_ukernel_avx2` (the float stems).",
        "",
        "| loop (per 12 FMAs) | FMA rate / pure FMA loop |",
        "|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['median']:.3f} [{r['min']:.3f}-{r['max']:.3f}] |")
    lines.append("")
    tmp_md, tmp_json = base.with_suffix(".md.tmp"), base.with_suffix(".json.tmp")
    tmp_md.write_text("\n".join(lines))
    tmp_json.write_text(json.dumps({**meta, "variants": rows}, indent=1))
    tmp_md.replace(base.with_suffix(".md"))
    tmp_json.replace(base.with_suffix(".json"))
    print("\n".join(lines))
    print(f"wrote {base.with_suffix('.md')}, {base.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
