"""``xnorkit export-c``: a ``.xk`` model as C sources that build with any C99 compiler.

Output folder::

    model_data.c / model_data.h   the file bytes as a 64-byte aligned const array, their size,
                                  the engine arena size for the configured batch and the
                                  input/output element counts
    main.c                        example: load from the array into a static arena, run on an
                                  input (a raw float32 file in the stored NHWC layout, or zeros),
                                  print / write the outputs
    Makefile                      cc (default), ARCH=aarch64 (adds the NEON kernels),
                                  THREADS=0 (-DXK_NO_THREADS), `make lib` for bare-metal targets
    xnorkit/include, xnorkit/csrc copies of the engine's portable sources: runtime, ops, ref,
                                  dispatch and the scalar + NEON micro-kernels -- the code the
                                  desktop tests run, not a second implementation
    README.md                     how to build for cc, aarch64-linux-gnu-gcc, arm-none-eabi-gcc

The arena size is asked from the engine itself (``xnorkit.Model`` with the scalar kernels, one
thread, ``max_batch``), which is the configuration of a microcontroller build
(``<NAME>_ARENA_SIZE``); ``<NAME>_ARENA_SIZE_ANY_ISA`` adds headroom for the SIMD kernels'
panel layouts, which cannot be measured on the exporting host (NEON on x86). main.c checks
its arena against ``xk_model_arena_size()`` at start-up and names the exact size it needs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


from xnorkit.convert import format as xkf

__all__ = ["export", "engine_sources", "source_root"]

_SOURCE_DIRS = ("csrc/runtime", "csrc/ops", "csrc/ref", "csrc/dispatch")
_UKERNEL_KEEP = ("-scalar.c", "-neon.c", ".inc", ".h")


def source_root() -> Path:
    """The folder holding include/ and csrc/ (XNORKIT_SOURCE_DIR, else the source checkout)."""
    env = os.environ.get("XNORKIT_SOURCE_DIR")
    cands = [Path(env)] if env else []
    cands.append(Path(__file__).resolve().parents[3])
    for c in cands:
        if (c / "csrc").is_dir() and (c / "include" / "xnorkit" / "xk_engine.h").is_file():
            return c
    raise FileNotFoundError(f"the engine's C sources (csrc/, include/xnorkit/xk_engine.h) were not found in "
                            f"{', '.join(map(str, cands))}; set XNORKIT_SOURCE_DIR to an xnorkit source checkout")


def engine_sources(root: Path | None = None) -> list[Path]:
    """Relative paths of the portable engine sources and headers to ship."""
    root = root or source_root()
    files: list[Path] = []
    for d in _SOURCE_DIRS:
        files += sorted(p.relative_to(root) for p in (root / d).glob("*") if p.suffix in (".c", ".h"))
    files += sorted(p.relative_to(root) for p in (root / "csrc").glob("*.h"))
    for p in sorted((root / "csrc" / "ukernels").rglob("*")):
        if p.is_file() and p.name.endswith(_UKERNEL_KEEP):
            files.append(p.relative_to(root))
    files += sorted(p.relative_to(root) for p in (root / "include" / "xnorkit").glob("*.h"))
    return files


def _engine_arena(data: bytes, max_batch: int) -> tuple[int, int] | None:
    """(arena bytes with the scalar kernels, the largest over this host's ISAs), one thread,
    or None without the binding."""
    try:
        from xnorkit import kernels as xk
        from xnorkit.runtime import Model
    except ImportError:
        return None
    sizes = {}
    for isa in xk.available_isas():
        with xk.use_isa(isa):
            sizes[isa] = int(Model(bytes(data), num_threads=1, max_batch=max_batch).info()["arena_bytes"])
    return sizes["scalar"], max(sizes.values())


def _c_array(name: str, data: bytes) -> str:
    lines = []
    for i in range(0, len(data), 16):
        lines.append("  " + ", ".join(f"0x{b:02x}" for b in data[i: i + 16]) + ",")
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def export(model_path: str | os.PathLike, outdir: str | os.PathLike, *, name: str = "xk_model",
           max_batch: int = 1) -> list[Path]:
    """Write the C project for ``model_path`` into ``outdir`` (created if needed).

    Args:
        model_path: a ``.xk`` file (validated first).
        outdir: destination folder.
        name: C identifier prefix for the array (``<name>_data``) and macros (upper case).
        max_batch: batch the static arena of main.c is sized for.

    Returns:
        The files written.

    Raises:
        FormatError: the model file is invalid.
        ValueError: ``name`` is not a C identifier.
    """
    if not name.isidentifier() or not name.isascii():
        raise ValueError(f"--name {name!r} is not a C identifier")
    data = Path(model_path).read_bytes()
    m = xkf.decode(data)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    root = source_root()
    written: list[Path] = []
    for rel in engine_sources(root):
        dst = out / "xnorkit" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, dst)
        written.append(dst)
    arena = _engine_arena(data, max_batch)
    N = name.upper()
    ins = [m.tensors[i] for i in m.inputs]
    outs = [m.tensors[i] for i in m.outputs]
    in_count, out_count = ins[0].count, outs[0].count
    if arena is not None:
        # other ISAs (NEON) pack weight panels with other tile sizes: headroom for main.c
        anyisa = (max(arena[1], arena[0]) + max(arena) // 8 + 1024 + 63) // 64 * 64
        arena_def = (f"#define {N}_ARENA_SIZE {arena[0]}u /* engine arena: scalar kernels, 1 thread, batch "
                     f"{max_batch} (a microcontroller build) */\n"
                     f"#define {N}_ARENA_SIZE_ANY_ISA {anyisa}u /* with headroom for SIMD panel layouts; main.c "
                     f"checks the exact need */")
    else:
        arena_def = (f"#define {N}_ARENA_SIZE 0u /* unknown at export time (no xnorkit._core) */\n"
                     f"#define {N}_ARENA_SIZE_ANY_ISA (1u << 20)")
    header = f"""/* Generated by xnorkit export-c from {Path(model_path).name}; do not edit. */
#ifndef {N}_DATA_H
#define {N}_DATA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {{
#endif

/* The .xk file (docs/format.md, version {m.version[0]}.{m.version[1]}), 64-byte aligned. */
extern const unsigned char {name}_data[];
#define {N}_DATA_SIZE {len(data)}u
{arena_def}
#define {N}_MAX_BATCH {max_batch}u
#define {N}_INPUT_COUNT {in_count}u  /* floats per sample of input 0 ({ins[0].name}, stored {list(ins[0].shape)}) */
#define {N}_OUTPUT_COUNT {out_count}u  /* floats per sample of output 0 ({outs[0].name}, {list(outs[0].shape)}) */

#ifdef __cplusplus
}}
#endif
#endif
"""
    source = f"""/* Generated by xnorkit export-c from {Path(model_path).name}; do not edit. */
#include "model_data.h"

#if defined(__GNUC__) || defined(__clang__)
#define XK_ALIGN64 __attribute__((aligned(64)))
#elif defined(_MSC_VER)
#define XK_ALIGN64 __declspec(align(64))
#else
#define XK_ALIGN64 /* main.c checks the alignment at run time */
#endif

#if defined(_MSC_VER)
XK_ALIGN64 const unsigned char {name}_data[{N}_DATA_SIZE] = {{
#else
const unsigned char {name}_data[{N}_DATA_SIZE] XK_ALIGN64 = {{
#endif
{_c_array(name, data)}
}};
"""
    main_c = f"""/* Example: run the exported model with the xnorkit engine, no heap.
 *   ./xk_main                 run on zeros, print the outputs
 *   ./xk_main in.f32 out.f32  read batch*{N}_INPUT_COUNT floats (stored NHWC layout, see
 *                             model_data.h), write the outputs (binary outputs as +-1.0f)
 * The batch is the number of samples in in.f32 (at most {N}_MAX_BATCH). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "model_data.h"
#include "xnorkit/xk_engine.h"

#ifndef XK_ARENA_BYTES
#ifdef XK_NO_THREADS
#define XK_ARENA_BYTES ({N}_ARENA_SIZE ? {N}_ARENA_SIZE : {N}_ARENA_SIZE_ANY_ISA)
#else
#define XK_ARENA_BYTES {N}_ARENA_SIZE_ANY_ISA
#endif
#endif

typedef union {{ uint64_t u; double d; void *p; }} xk_max_align;
static xk_max_align arena_words[(XK_ARENA_BYTES + 64 + sizeof(xk_max_align) - 1) / sizeof(xk_max_align)];
static float output[{N}_MAX_BATCH * {N}_OUTPUT_COUNT];

int main(int argc, char **argv) {{
  xk_model_options opt;
  size_t need = 0, batch = 1, i;
  float *input;
  uint8_t *arena = (uint8_t *)arena_words;
  xk_model *model = NULL;
  memset(&opt, 0, sizeof opt);
  opt.max_batch = {N}_MAX_BATCH;
  opt.num_threads = 1;
  arena += (64 - ((uintptr_t)arena & 63)) & 63; /* 64-byte align */
  if (((uintptr_t){name}_data & 63) != 0) {{
    printf("error: the model array is not 64-byte aligned on this compiler\\n");
    return 2;
  }}
  if (xk_model_arena_size({name}_data, {N}_DATA_SIZE, &opt, &need) != XK_OK) {{
    printf("error: %s\\n", xk_last_error());
    return 2;
  }}
  if (need > XK_ARENA_BYTES) {{
    printf("error: the engine needs %lu arena bytes, this build has %lu (compile with -DXK_ARENA_BYTES=%lu)\\n",
           (unsigned long)need, (unsigned long)XK_ARENA_BYTES, (unsigned long)need);
    return 2;
  }}
  if (xk_model_load({name}_data, {N}_DATA_SIZE, &opt, arena, XK_ARENA_BYTES, &model) != XK_OK) {{
    printf("error: %s\\n", xk_last_error());
    return 2;
  }}
  /* the input is read straight into the engine's arena (xk_model_input_buffer): no input array */
  if (argc >= 2) {{
    FILE *f = fopen(argv[1], "rb");
    long bytes;
    size_t n;
    if (!f) {{ printf("error: cannot open %s\\n", argv[1]); return 1; }}
    fseek(f, 0, SEEK_END);
    bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    n = bytes > 0 ? (size_t)bytes / sizeof(float) : 0;
    if (n == 0 || n % {N}_INPUT_COUNT || (size_t)bytes % sizeof(float) || n / {N}_INPUT_COUNT > {N}_MAX_BATCH) {{
      printf("error: %s holds %ld bytes; need 1 to %u samples of %u floats\\n", argv[1], bytes, {N}_MAX_BATCH,
             {N}_INPUT_COUNT);
      fclose(f);
      return 1;
    }}
    batch = n / {N}_INPUT_COUNT;
    input = xk_model_input_buffer(model, 0, batch);
    if (!input || fread(input, sizeof(float), n, f) != n) {{
      printf("error: cannot read %s\\n", argv[1]);
      fclose(f);
      return 1;
    }}
    fclose(f);
  }} else {{
    input = xk_model_input_buffer(model, 0, batch);
    memset(input, 0, batch * {N}_INPUT_COUNT * sizeof(float));
  }}
  if (xk_model_run(model, batch, input, output) != XK_OK) {{
    printf("error: %s\\n", xk_last_error());
    return 3;
  }}
  if (argc >= 3) {{
    FILE *f = fopen(argv[2], "wb");
    if (!f || fwrite(output, sizeof(float), batch * {N}_OUTPUT_COUNT, f) != batch * {N}_OUTPUT_COUNT) {{
      printf("error: cannot write %s\\n", argv[2]);
      return 1;
    }}
    fclose(f);
  }} else {{
    for (i = 0; i < batch * {N}_OUTPUT_COUNT; i++) printf("%g%c", (double)output[i], (i + 1) % {N}_OUTPUT_COUNT ? ' ' : '\\n');
  }}
  printf("ok: %lu ops, arena %lu bytes\\n", (unsigned long)xk_model_num_ops(model), (unsigned long)need);
  return 0;
}}
"""
    srcs = [p for p in engine_sources(root) if p.suffix == ".c" and not p.name.endswith("-neon.c")]
    neon = [p for p in engine_sources(root) if p.name.endswith("-neon.c")]
    makefile = f"""# Generated by xnorkit export-c. Builds with any C99 compiler:
#   make                                  host build with cc (threads on)
#   make CC=aarch64-linux-gnu-gcc ARCH=aarch64 LDFLAGS=-static    adds the NEON kernels
#   make lib CC=arm-none-eabi-gcc THREADS=0 TARGET_FLAGS="-mcpu=cortex-m4 -mthumb"   objects + libxk_model.a
CC ?= cc
AR ?= ar
ARCH ?=
THREADS ?= 1
OPT ?= -O2
TARGET_FLAGS ?=
CFLAGS ?= $(OPT) -std=c99 -ffp-contract=off -Wall
CPPFLAGS += -Ixnorkit/include -Ixnorkit/csrc -I.
LDLIBS ?= -lm
ifeq ($(THREADS),0)
CPPFLAGS += -DXK_NO_THREADS
else
LDLIBS += -lpthread
CFLAGS += -pthread
endif
SRCS = {' '.join('xnorkit/' + str(p) for p in srcs)} model_data.c
ifeq ($(ARCH),aarch64)
SRCS += {' '.join('xnorkit/' + str(p) for p in neon)}
CPPFLAGS += -DXK_HAVE_NEON
endif
OBJS = $(SRCS:.c=.o)

all: xk_main

xk_main: $(OBJS) main.o
\t$(CC) $(CFLAGS) $(TARGET_FLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

lib: lib{name}.a

lib{name}.a: $(OBJS)
\t$(AR) rcs $@ $^

%.o: %.c
\t$(CC) $(CPPFLAGS) $(CFLAGS) $(TARGET_FLAGS) -c $< -o $@

clean:
\trm -f $(OBJS) main.o xk_main lib{name}.a

.PHONY: all lib clean
"""
    readme = f"""# {name}: exported by `xnorkit export-c`

Model file {Path(model_path).name}: {len(data):,} bytes (format {m.version[0]}.{m.version[1]}),
{len(m.ops)} ops; input 0 `{ins[0].name}` {list(ins[0].shape)} (stored NHWC / NC, PyTorch layout
`{ins[0].torch_layout}`), output 0 `{outs[0].name}` {list(outs[0].shape)}.

* `make && ./xk_main in.f32 out.f32` -- host build (any C99 compiler: `make CC=clang`).
* `make CC=aarch64-linux-gnu-gcc ARCH=aarch64 LDFLAGS=-static` -- AArch64 with NEON kernels.
* `make lib CC=arm-none-eabi-gcc THREADS=0 TARGET_FLAGS="-mcpu=cortex-m4 -mthumb"` -- a static
  library for a microcontroller; link it with your startup code and call the API of
  `xnorkit/include/xnorkit/xk_engine.h` as main.c does.

The engine needs `{N}_ARENA_SIZE` bytes of 64-byte aligned memory (scalar kernels, one thread,
batch {max_batch}); nothing is allocated at run time. The model array must stay in memory (flash is
fine) while the model is used.
"""
    for fname, text in (("model_data.h", header), ("model_data.c", source), ("main.c", main_c),
                        ("Makefile", makefile), ("README.md", readme)):
        _write(out / fname, text)
        written.append(out / fname)
    return written
