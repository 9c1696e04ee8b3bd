"""Compile the Triton kernels for NVIDIA targets without a GPU and report what ptxas made of them.

Uses Triton's bundled ptxas/cuobjdump: registers, spill stack, and for the GEMM's inner loop the
SASS instruction count per POPC (the popcount pipe runs at a quarter of the integer rate, so a
loop with <= ~8 instructions per POPC is popcount-bound; more means issue-bound). This is a
static check, not a timing: it catches spills and bad lowerings on a machine with no GPU.

    python -m xnorkit.kernels.gpu.offline_check --arch 90 [--arch 80] [--all]

Must run without TRITON_INTERPRET (the interpreter replaces the compiler).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

SIG_GEMM = {
    "a_ptr": "*i32", "b_ptr": "*i32", "c_ptr": "*i32", "scale_ptr": "*fp32", "bias_ptr": "*fp32",
    "thr_ptr": "*i32", "flip_ptr": "*i32", "M": "i32", "N": "i32", "KW": "i32", "K_BITS": "i32",
    "stride_am": "i32", "stride_bn": "i32", "stride_cm": "i32", "OUT_W": "i32",
}


def _tools():
    import triton  # noqa: PLC0415

    base = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    cuobjdump = os.path.join(base, "cuobjdump")
    if not os.path.exists(cuobjdump):
        raise RuntimeError(f"Triton's bundled cuobjdump was not found in {base}")
    return cuobjdump


def _loop_ops(sass: str) -> collections.Counter | None:
    """Opcode histogram of the largest backward-branch loop in a SASS listing."""
    lines = [(int(a, 16), t.strip()) for a, t in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    best = None
    for addr, text in lines:
        m = re.search(r"\bBRA\s+(?:\S+\s+)?(0x[0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            body = [t for a, t in lines if int(m.group(1), 16) <= a <= addr]
            if best is None or len(body) > len(best):
                best = body
    if best is None:
        return None
    ops = collections.Counter()
    for text in best:
        text = re.sub(r"^@!?U?P\w+\s+", "", text)
        ops[text.split()[0].split(".")[0]] += 1
    return ops


def compile_report(fn, signature: dict, constexprs: dict, arch: int, num_warps: int, num_stages: int) -> dict:
    import triton  # noqa: PLC0415
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415
    from triton.compiler import ASTSource  # noqa: PLC0415

    sig = dict(signature)
    sig.update({k: "constexpr" for k in constexprs})
    kern = triton.compile(
        ASTSource(fn=fn, signature=sig, constexprs=constexprs),
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": num_warps, "num_stages": num_stages},
    )
    cuobjdump = _tools()
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kern.asm["cubin"])
        path = f.name
    try:
        res = subprocess.run([cuobjdump, "-res-usage", path], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", path], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(path)
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", res)
    ops = _loop_ops(sass) or collections.Counter()
    popc = ops.get("POPC", 0)
    total = sum(ops.values())
    return {
        "regs": int(m.group(1)), "stack": int(m.group(2)), "shared": int(m.group(3)),
        "local": int(m.group(4)), "sass_popc": sass.count("POPC"), "loop_instrs": total,
        "loop_popc": popc, "instr_per_popc": round(total / popc, 2) if popc else None,
    }


def check(arches, all_configs: bool) -> list[dict]:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("unset TRITON_INTERPRET: the interpreter replaces the compiler")
    from . import _triton as T  # noqa: PLC0415

    rows = []
    configs = T.GPU_CONFIGS if all_configs else T.GPU_CONFIGS[:1]
    for arch in arches:
        for cfg in configs:
            for out in (0, 1, 2) if (cfg is T.GPU_CONFIGS[0]) else (0,):
                consts = dict(OUT=out, HAS_SCALE=True, HAS_BIAS=True, HAS_FLIP=True, HW_POPC=True, **cfg.kwargs)
                sig = dict(SIG_GEMM)
                if out == 1:
                    sig["c_ptr"] = "*fp32"
                r = compile_report(T.bgemm_kernel, sig, consts, arch, cfg.num_warps, cfg.num_stages)
                rows.append({"kernel": "bgemm", "arch": arch, "out": out, **cfg.kwargs,
                             "num_warps": cfg.num_warps, "num_stages": cfg.num_stages, **r})
        for dt in ("fp32", "fp16", "bf16", "i8"):
            sig = {"x_ptr": f"*{dt}", "out_ptr": "*i32", "R": "i32", "K": "i32", "W": "i32",
                   "stride_xr": "i32", "stride_xk": "i32", "stride_or": "i32"}
            r = compile_report(T.pack_kernel, sig, {"BLOCK_R": 16, "BLOCK_W": 8}, arch, 4, 3)
            rows.append({"kernel": f"pack[{dt}]", "arch": arch, **r})
        sig = {"w_ptr": "*i32", "out_ptr": "*i8", "R": "i32", "K": "i32", "WIDTH": "i32",
               "stride_wr": "i32", "stride_or": "i32"}
        r = compile_report(T.unpack_kernel, sig, {"BLOCK_R": 16, "BLOCK_C": 256}, arch, 4, 3)
        rows.append({"kernel": "unpack[i8]", "arch": arch, **r})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, action="append", help="SM version, e.g. 80 or 90 (repeatable)")
    p.add_argument("--all", action="store_true", help="every autotuning config, not just the first")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = p.parse_args(argv)
    rows = check(args.arch or [90], args.all)
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        tile = f"{r['BLOCK_M']}x{r['BLOCK_N']}x{r['BLOCK_K']} w{r['num_warps']} s{r['num_stages']} out{r['out']}" if r["kernel"] == "bgemm" else ""
        print(f"sm_{r['arch']} {r['kernel']:<11} {tile:<26} regs {r['regs']:>3} stack {r['stack']:>5} "
              f"loop instr/POPC {r['instr_per_popc']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
