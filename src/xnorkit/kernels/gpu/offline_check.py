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


def check(arches, all_configs: bool, quick: bool = False) -> list[dict]:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("unset TRITON_INTERPRET: the interpreter replaces the compiler")
    from . import _triton as T  # noqa: PLC0415

    rows = []
    configs = T.GPU_CONFIGS if all_configs else T.GPU_CONFIGS[:1]
    for arch in arches:
        for cfg in configs:
            outs = ((0, 2) if quick else (0, 1, 2)) if cfg is T.GPU_CONFIGS[0] else (0,)
            for out in outs:
                consts = dict(OUT=out, HAS_SCALE=True, HAS_BIAS=True, HAS_FLIP=True, HW_POPC=True, **cfg.kwargs)
                sig = dict(SIG_GEMM)
                if out == 1:
                    sig["c_ptr"] = "*fp32"
                r = compile_report(T.bgemm_kernel, sig, consts, arch, cfg.num_warps, cfg.num_stages)
                rows.append({"kernel": "bgemm", "arch": arch, "out": out, **cfg.kwargs,
                             "num_warps": cfg.num_warps, "num_stages": cfg.num_stages, **r})
        for dt in ("fp32",) if quick else ("fp32", "fp16", "bf16", "i8"):
            sig = {"x_ptr": f"*{dt}", "out_ptr": "*i32", "R": "i32", "K": "i32", "W": "i32", "R_INNER": "i32",
                   "stride_xo": "i32", "stride_xr": "i32", "stride_xk": "i32", "stride_or": "i32"}
            r = compile_report(T.pack_kernel, sig, {"BLOCK_R": 16, "BLOCK_W": 8}, arch, 4, 3)
            rows.append({"kernel": f"pack[{dt}]", "arch": arch, **r})
        if quick:
            continue
        sig = {"w_ptr": "*i32", "out_ptr": "*i8", "R": "i32", "K": "i32", "WIDTH": "i32",
               "stride_wr": "i32", "stride_or": "i32"}
        r = compile_report(T.unpack_kernel, sig, {"BLOCK_R": 16, "BLOCK_C": 256}, arch, 4, 3)
        rows.append({"kernel": "unpack[i8]", "arch": arch, **r})
    return rows


_MMA_SHIM = r"""
#include <stdint.h>
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define __forceinline__ __attribute__((always_inline)) inline
#define __launch_bounds__(n) __attribute__((launch_bounds(n)))
#include "__clang_cuda_builtin_vars.h"
__device__ inline int atomicAdd(int* p, int v) { return __nvvm_atom_add_gen_i(p, v); }
__device__ inline int __popc(unsigned x) { return __builtin_popcount(x); }
#define __trap() __builtin_trap()
"""


def mma_report(arches, clang: str | None = None, op: str = "and") -> list[dict]:
    """Compile the b1 mma kernel's device code (clang -> PTX -> Triton's ptxas) and list the
    tensor-core instructions ptxas emitted per architecture: a native ``BMMA.168256.AND.POPC``,
    or calls into an emulation routine. ``op="xor"`` swaps in ``.xor.popc`` to show why the
    kernel avoids it. Needs clang with the NVPTX target; no CUDA toolkit, no GPU.
    """
    import shutil  # noqa: PLC0415

    from ._mma import cuda_source  # noqa: PLC0415

    clang = clang or next((c for c in ("clang", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14")
                           if shutil.which(c)), None)
    if clang is None:
        raise RuntimeError("clang was not found (needed to compile the CUDA device code offline)")
    cuobjdump = _tools()
    ptxas = os.path.join(os.path.dirname(cuobjdump), "ptxas")
    src = cuda_source()
    body = src[src.index("namespace {"):src.index("}  // namespace")]
    body = body.replace("namespace {", "").replace("__global__ void", 'extern "C" __global__ void')
    rows = []
    with tempfile.TemporaryDirectory() as d:
        cu, ptx = os.path.join(d, "k.cu"), os.path.join(d, "k.ptx")
        with open(cu, "w") as f:
            f.write(_MMA_SHIM + body)
        subprocess.run([clang, "-x", "cuda", "--cuda-device-only", "--cuda-gpu-arch=sm_80", "-nocudainc",
                        "-nocudalib", "-O3", "-S", "-w", "-o", ptx, cu], check=True, capture_output=True, text=True)
        text = open(ptx).read()
        text = re.sub(r"^\.version .*$", ".version 8.0", text, flags=re.M)  # and.popc needs PTX >= 7.1
        if op == "xor":
            text = text.replace(".and.popc", ".xor.popc")
        for arch in arches:
            p_arch = os.path.join(d, f"k{arch}.ptx")
            cubin = os.path.join(d, f"k{arch}.cubin")
            with open(p_arch, "w") as f:
                f.write(re.sub(r"^\.target sm_\d+", f".target sm_{arch}", text, flags=re.M))
            info = subprocess.run([ptxas, f"-arch=sm_{arch}", "-v", "-o", cubin, p_arch],
                                  capture_output=True, text=True, check=True).stderr
            sass = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True, check=True).stdout
            regs = re.search(r"Used (\d+) registers", info)
            rows.append({
                "arch": arch, "op": op, "regs": int(regs.group(1)) if regs else None,
                "spills": "0 bytes spill stores" not in info,
                "bmma": dict(collections.Counter(re.findall(r"\bBMMA[\w.]*", sass))),
                "calls": len(re.findall(r"\bCALL\b", sass)),
                "mma_in_ptx": text.count("mma.sync"),
            })
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, action="append", help="SM version, e.g. 80 or 90 (repeatable)")
    p.add_argument("--all", action="store_true", help="every autotuning config, not just the first")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.add_argument("--quick", action="store_true", help="fewer kernels (CI smoke test)")
    p.add_argument("--mma", choices=["and", "xor"], help="report the b1 mma CUDA kernel instead (needs clang)")
    args = p.parse_args(argv)
    if args.mma:
        rows = mma_report(args.arch or [80, 90], op=args.mma)
        print(json.dumps(rows) if args.json else "\n".join(map(str, rows)))
        return 0
    rows = check(args.arch or [90], args.all, args.quick)
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
