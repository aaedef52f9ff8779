#!/usr/bin/env python3
"""Kernel SASS statistics: a static performance proxy that a CPU machine can measure.

    python bench/sass_stats.py [--arch sm_90a --arch sm_100a] [--with-cutlass] [--out FILE.md]
                               [--json FILE.json] [--jobs 2] [--build-dir build/sass]

Compiles every kernel file of csrc/kernels/ (the flags of csrc/kernels/CMakeLists.txt in a
Release build) to a cubin per architecture, disassembles it and prints, per kernel: registers,
spill bytes, shared memory, threads per block, CTAs per SM and the limiting resource; and per hot
loop: instructions, MMAs, instructions per MMA, shared and global loads per MMA, barriers per
iteration and, for the W4A16 GEMM k-loops, weight bytes per issued instruction.

It is a proxy: instruction counts of the compiled code, not a timing. GPU timings
(bench/gdn_bench.py, bench/moe_bench.py) stay the measure; these numbers only say where the
instruction stream is heavy, and whether a change made it lighter.

Inputs and caching
  Cubins, ptxas resource logs (-Xptxas -v) and a key (hash of the source, every header under
  csrc/include and csrc/kernels, the flags and the nvcc version) live in --build-dir/<arch>/; a file
  is recompiled only when its key changes. bench/sass_launch_probe.cu (host code, run on the CPU)
  prints the dynamic shared memory and the W4A16 tile constants from the kernels' own headers.
  The CUTLASS file (moe/grouped_gemm_nvfp4_sm100.cu, sm_100a only; ~60 s and 4-5 GB of memory) is
  compiled only with --with-cutlass, and needs the nvidia-cutlass headers (cutlass_library).

Tools
  nvcc (CUDA 13; $CUDACXX, $CUDA_HOME/bin, PATH, /usr/local/cuda/bin) and the disassemblers
  nvdisasm and cuobjdump, which a plain CUDA toolkit has but the pip CUDA wheels do not: install
  them with `pip install -e '.[sass]'` (the nvidia-cuda-nvdisasm and nvidia-cuda-cuobjdump wheels,
  found under the interpreter's nvidia/cu13/bin), or pass --tools-dir.

Per-kernel columns
  regs      registers per thread (ptxas); spills: spill store/load bytes (ptxas).
  smem      static + dynamic shared bytes per CTA. Dynamic: the launcher's size (from the probe)
            or 0 when every launch site passes a literal 0; otherwise "static only".
  threads   block size: __launch_bounds__ (EIATTR_MAX_THREADS in the cubin), else the launch
            site's block argument resolved through the file's constexpr ints.
  CTAs/SM   min over the limits of cuda_occupancy.h: registers (allocated per warp in units of
            256, per SM sub-partition), shared memory (+1 KiB reserved per CTA, 128-byte units,
            the largest carveout), threads, and the CTA slots; the limiting one is named.

Loop detection (heuristics)
  The SASS of each function is cut into basic blocks (BRA, EXIT, RET end a block; a BRA guarded
  by a predicate or an operand, as BRA.DIV / BRA.CONV, may fall through; an indirect BRX goes to
  the BRANCH_TARGETS nvdisasm lists; CALL falls through and its callee, like any block the entry
  does not reach, is analysed from a root of its own). A loop is a natural loop: a branch to a block that
  dominates it (a back edge); its body is every block that reaches the back edge without passing
  the header, so the compiler's out-of-line paths (a slow fp32 division entered and left by
  branches) count with the loop they serve, and a jump back to such a path's continuation is not
  taken for a loop. Back edges to one header are one loop; loops nest by body inclusion.
  Irreducible cycles (no dominating header) are not reported. Counts are static: every
  instruction of the body once, so both sides of a branch, the compiler's duplicated paths and
  nested loops' bodies each count once per iteration.
  Reported per kernel ("hot loops"):
    inner   the innermost loops that contain an MMA (no nested loop with an MMA);
    outer   the outermost loop that contains an MMA, when it is not also an inner one (the
            persistent tile loop of a GEMM, the GDN chunk loop when its MMAs sit in inner loops);
    largest when no loop has an MMA: the loop with the most instructions.
  MMA instructions: HMMA/IMMA/QMMA/OMMA/DMMA (warp MMA), *GMMA (wgmma), UTC*MMA (tcgen05). "MMA
  eq." converts them to m16n8k16 equivalents by their multiply-adds when the opcode names the
  shape (HMMA.16816 = 1, HMMA.1688 = 0.5, HGMMA.64x128x16 = 64); tcgen05 shapes live in a
  descriptor, so those count one each. Shared loads: LDS, LDSM. Global loads: LDG, LDGSTS (cp.async),
  UTMALDG (TMA). Barriers: BAR.* (not mbarrier waits, not DEPBAR).

Weight bytes per issued instruction (W4A16 GEMM k-loop only)
  One k-loop iteration stages BK = 64 of K for b_rows = (2 if SwiGLU else 1) x BN weight rows:
  b_rows x (BK/2 bytes of packed E2M1 + BK/16 bytes of E4M3 scales) per CTA, while each of the
  CTA's WM x WN warps issues the loop body once:
      weight B/inst = b_rows x (BK/2 + BK/16) / (body instructions x WM x WN).
  A loop is matched to its tile config when its MMA count per warp equals ops x MI x NI x BK/16;
  anything else prints n/a.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "csrc" / "kernels"
INCLUDE = ROOT / "csrc" / "include"
PROBE = Path(__file__).resolve().parent / "sass_launch_probe.cu"
CUTLASS_FILE = "moe/grouped_gemm_nvfp4_sm100.cu"
HEADER = "static proxy from the SASS (instruction counts), not a timing"
SASS_EXTRA = "pip install -e '.[sass]'  (nvidia-cuda-nvdisasm, nvidia-cuda-cuobjdump)"


class ToolError(RuntimeError):
    """A compiler or disassembler is missing or failed; the message says what to install or fix."""


# --- architecture limits ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SmLimits:
    """Per-SM resources of one architecture (CUDA C++ Programming Guide, compute capability
    table; allocation rules of cuda_occupancy.h)."""

    regs_per_sm: int = 65536
    max_regs_per_thread: int = 255
    reg_unit: int = 256  # registers are allocated per warp in units of this many
    sub_partitions: int = 4
    smem_per_sm: int = 228 * 1024  # the largest carveout
    smem_per_block: int = 227 * 1024  # opt-in maximum per CTA
    smem_reserved_per_block: int = 1024
    smem_unit: int = 128
    max_ctas: int = 32
    max_threads: int = 2048


ARCH_LIMITS = {"sm_90a": SmLimits(), "sm_100a": SmLimits()}  # same register file and smem on both


def _round_up(x: int, unit: int) -> int:
    return (x + unit - 1) // unit * unit


def occupancy(regs: int, threads: int, smem_bytes: int, lim: SmLimits) -> tuple[int, str, dict[str, int]]:
    """CTAs per SM and the limiting resource, for `regs` registers per thread, `threads` per CTA
    and `smem_bytes` (static + dynamic) of shared memory per CTA. Returns (ctas, limiter, per-limit
    CTAs). Follows cudaOccMaxActiveBlocksPerMultiprocessor with partitioned global caching off."""
    warps = (threads + 31) // 32
    limits: dict[str, int] = {}
    regs_per_warp = _round_up(max(regs, 1) * 32, lim.reg_unit)
    if regs > lim.max_regs_per_thread or regs_per_warp * _round_up(warps, lim.sub_partitions) > lim.regs_per_sm:
        limits["regs"] = 0
    else:
        warps_per_sub = (lim.regs_per_sm // lim.sub_partitions) // regs_per_warp
        limits["regs"] = warps_per_sub * lim.sub_partitions // warps
    smem = _round_up(smem_bytes + lim.smem_reserved_per_block, lim.smem_unit)
    limits["smem"] = 0 if smem_bytes > lim.smem_per_block else lim.smem_per_sm // smem
    limits["threads"] = lim.max_threads // (warps * 32)
    limits["ctas"] = lim.max_ctas
    ctas = min(limits.values())
    limiter = next(k for k in ("regs", "smem", "threads", "ctas") if limits[k] == ctas)
    return ctas, limiter, limits


# --- SASS parsing and loops ------------------------------------------------------------------------

_INST = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(?:\{\s*)?(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")
_FUNC = re.compile(r"^\s*\.text\.(\S+):\s*$")
_MMA = re.compile(r"^(UTC\w*MMA|[HIQOBD]G?MMA|HGMMA|IGMMA|QGMMA|BGMMA)\b")
_SHAPE_WARP = re.compile(r"^(16|8)(8)(\d+)$")  # HMMA.16816 -> m16 n8 k16
_SHAPE_GMMA = re.compile(r"^(\d+)x(\d+)x(\d+)$")


@dataclasses.dataclass
class Inst:
    addr: int
    opcode: str  # with modifiers, e.g. HMMA.16816.F32.BF16
    operands: str
    target: str | None = None  # branch target label
    pred: str = ""  # guard predicate, e.g. "@!P0"


def parse_sass(text: str) -> dict[str, tuple[list[Inst], dict[str, int]]]:
    """nvdisasm output -> {mangled function: (instructions, label -> address)}."""
    funcs: dict[str, tuple[list[Inst], dict[str, int]]] = {}
    insts: list[Inst] = []
    labels: dict[str, int] = {}
    pending: list[str] = []
    for line in text.splitlines():
        m = _FUNC.match(line)
        if m:
            insts, labels, pending = [], {}, []
            funcs[m.group(1)] = (insts, labels)
            continue
        m = _LABEL.match(line)
        if m:
            pending.append(m.group(1))
            continue
        m = _INST.match(line)
        if m and funcs:
            addr = int(m.group(1), 16)
            for lab in pending:
                labels[lab] = addr
            pending = []
            t = _TARGET.search(m.group(4))
            insts.append(Inst(addr, m.group(3), m.group(4).strip(), t.group(1) if t else None,
                              (m.group(2) or "").strip()))
    return funcs


def mma_equivalents(opcode: str) -> float | None:
    """m16n8k16 equivalents of one MMA instruction by multiply-adds; None when the opcode does not
    name the shape (tcgen05)."""
    parts = opcode.split(".")
    for part in parts[1:]:
        m = _SHAPE_WARP.match(part)
        if m:
            return int(m.group(1)) * int(m.group(2)) * int(m.group(3)) / (16 * 8 * 16)
        m = _SHAPE_GMMA.match(part)
        if m:
            return int(m.group(1)) * int(m.group(2)) * int(m.group(3)) / (16 * 8 * 16)
    return None


def classify(opcode: str) -> str | None:
    base = opcode.split(".")[0]
    if _MMA.match(base):
        return "mma"
    if base in ("LDS", "LDSM"):
        return "lds"
    if base in ("LDG", "LDGSTS", "UTMALDG"):
        return "ldg"
    if base == "BAR":
        return "bar"
    return None


@dataclasses.dataclass
class Loop:
    head: int  # address of the header (first instruction of the loop's entry block)
    tail: int  # highest address of the body
    addrs: frozenset = frozenset()  # addresses of the body's instructions
    insts: int = 0
    mma: int = 0
    mma_eq: float | None = 0.0
    lds: int = 0
    ldg: int = 0
    bar: int = 0
    role: str = ""
    weight_bytes_per_inst: float | None = None
    weight_note: str = ""

    def contains(self, other: Loop) -> bool:
        return self is not other and other.addrs < self.addrs

    def per_mma(self, count: int) -> float | None:
        return count / self.mma_eq if self.mma_eq else None


def _conditional(ins: Inst) -> bool:
    """A branch that may fall through: guarded (@P0, not @PT) or with an operand before its label
    (BRA.U !UP0, ...; BRA.DIV / BRA.CONV UR4, ...: taken only when the warp is diverged /
    converged)."""
    guarded = ins.pred not in ("", "@PT")
    return guarded or not ins.operands.startswith("`") or ".DIV" in ins.opcode


def _targets(ins: Inst) -> list[str]:
    """Labels a branch may go to: BRA's target, an indirect branch's BRANCH_TARGETS list."""
    if ins.opcode.split(".")[0] == "BRA":
        return [ins.target] if ins.target else []
    m = re.search(r"BRANCH_TARGETS\s+([^\"*]+)", ins.operands)
    return [t.strip() for t in m.group(1).split(",")] if m else []


def control_flow(insts: list[Inst], labels: dict[str, int]) -> tuple[list[list[Inst]], dict[int, list[int]]]:
    """Basic blocks (by index) and successor lists of one function. CALL falls through (the callee
    is not followed); EXIT and RET end a path; an indirect branch (BRX, a switch) goes to the
    BRANCH_TARGETS nvdisasm lists for it."""
    leaders = {0}
    index = {ins.addr: k for k, ins in enumerate(insts)}
    for k, ins in enumerate(insts):
        base = ins.opcode.split(".")[0]
        if base in ("BRA", "EXIT", "RET", "BRX", "JMX", "JMP"):
            leaders.add(k + 1)
            for t in _targets(ins):
                if t in labels and labels[t] in index:
                    leaders.add(index[labels[t]])
    starts = sorted(x for x in leaders if x < len(insts))
    blocks = [insts[a:b] for a, b in zip(starts, starts[1:] + [len(insts)])]
    block_of = {b[0].addr: n for n, b in enumerate(blocks)}
    succ: dict[int, list[int]] = {}
    for n, b in enumerate(blocks):
        last, out = b[-1], []
        base = last.opcode.split(".")[0]
        falls = n + 1 < len(blocks)
        out = [block_of[labels[t]] for t in _targets(last) if t in labels and labels[t] in block_of]
        if base == "BRA":
            falls = falls and _conditional(last)
        elif base in ("EXIT", "RET", "BRX", "JMX", "JMP"):
            falls = falls and last.pred not in ("", "@PT")
        if falls:
            out.append(n + 1)
        succ[n] = out
    return blocks, succ


def dominators(succ: dict[int, list[int]]) -> dict[int, set[int]]:
    """Dominator sets of the blocks (iterative data-flow). Blocks that block 0 does not reach (an
    indirect branch without a target list, a callee) are entered from a virtual root (-1): the
    lowest such block each time, until every block is reached."""
    entry = {-1: [0]}
    reach: set[int] = set()

    def visit(root: int) -> None:
        stack = [root]
        reach.add(root)
        while stack:
            for t in succ[stack.pop()]:
                if t not in reach:
                    reach.add(t)
                    stack.append(t)

    visit(0)
    while len(reach) < len(succ):
        root = min(n for n in succ if n not in reach)
        entry[-1].append(root)
        visit(root)
    graph = {**succ, **entry}
    preds: dict[int, list[int]] = {n: [] for n in graph}
    for n, outs in graph.items():
        for t in outs:
            preds[t].append(n)
    nodes = set(graph)
    dom = {n: set(nodes) for n in graph}
    dom[-1] = {-1}
    order = sorted(succ)
    changed = True
    while changed:
        changed = False
        for n in order:
            new = set.intersection(*(dom[p] for p in preds[n])) | {n}
            if new != dom[n]:
                dom[n], changed = new, True
    del dom[-1]
    return dom


def find_loops(insts: list[Inst], labels: dict[str, int]) -> list[Loop]:
    """Natural loops of one function (a back edge: a branch to a block that dominates it), one per
    header, counted; sorted by header address."""
    if not insts:
        return []
    blocks, succ = control_flow(insts, labels)
    dom = dominators(succ)
    preds: dict[int, list[int]] = {n: [] for n in dom}
    for n in dom:
        for t in succ[n]:
            preds[t].append(n)
    bodies: dict[int, set[int]] = {}
    for n in dom:
        for h in succ[n]:
            if h == n and len(blocks[n]) == 1:
                continue  # a lone branch to itself: the padding after the last EXIT
            if h in dom[n]:  # back edge n -> h
                body, stack = bodies.setdefault(h, {h}), [n]
                while stack:
                    x = stack.pop()
                    if x not in body:
                        body.add(x)
                        stack.extend(preds[x])
    loops = []
    for h, body in sorted(bodies.items()):
        members = [ins for b in sorted(body) for ins in blocks[b]]
        lp = Loop(blocks[h][0].addr, max(i.addr for i in members), frozenset(i.addr for i in members))
        eq_known = True
        for ins in members:
            if ins.opcode == "NOP":
                continue
            lp.insts += 1
            kind = classify(ins.opcode)
            if kind == "mma":
                lp.mma += 1
                eq = mma_equivalents(ins.opcode)
                if eq is None:
                    eq_known = False
                else:
                    lp.mma_eq += eq
            elif kind:
                setattr(lp, kind, getattr(lp, kind) + 1)
        if not eq_known:
            lp.mma_eq = float(lp.mma)  # tcgen05: one per instruction
        loops.append(lp)
    return loops


def hot_loops(loops: list[Loop]) -> list[Loop]:
    """The loops worth reporting (see the module docstring): inner and outer MMA loops, else the
    largest loop."""
    with_mma = [lp for lp in loops if lp.mma]
    chosen: list[Loop] = []
    for lp in with_mma:
        if not any(lp.contains(o) for o in with_mma):
            lp.role = "inner"
            chosen.append(lp)
    for lp in with_mma:
        if lp.role == "" and not any(o.contains(lp) for o in with_mma):
            lp.role = "outer"
            chosen.append(lp)
    if not with_mma and loops:
        big = max(loops, key=lambda lp: lp.insts)
        big.role = "largest"
        chosen.append(big)
    return sorted(chosen, key=lambda lp: lp.head)


# --- names, launch facts -------------------------------------------------------------------------------


def demangle(names: list[str]) -> dict[str, str]:
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines()))


def _mangled_identifiers(mangled: str) -> list[str]:
    """The <length><name> identifiers of an Itanium-mangled name, in order (a display fallback)."""
    out, i = [], 0
    while i < len(mangled):
        m = re.match(r"(\d+)([A-Za-z_])", mangled[i:])
        if m and (i == 0 or not mangled[i - 1].isdigit()):
            n = int(m.group(1))
            start = i + len(m.group(1))
            ident = mangled[start:start + n]
            if len(ident) == n and n <= 80 and re.fullmatch(r"[A-Za-z_]\w*", ident) and "EE" not in ident:
                out.append(ident)
                i = start + n
                continue
        i += 1
    return out


def short_name(demangled: str, mangled: str = "") -> str:
    """`void ns::kernel<ns::Config<16, 32>, false>(ns::Args)` -> `kernel<Config<16, 32>, false>`.
    A name the demangler left mangled (CUTLASS's are too deep for c++filt) or one too long to
    read becomes `function<FirstType<...LongestIdentifier...>>`."""
    s = demangled
    if s.startswith("_Z") or len(s) > 400:
        ids = _mangled_identifiers(mangled or s)
        if len(ids) >= 3:
            types = [x for x in ids[2:] if x[0].isupper()]
            first = types[0] if types else ids[2]
            longest = max(ids[2:], key=len)
            return f"{ids[1]}<{first}<...{longest}...>>" if longest != first else f"{ids[1]}<{first}<...>>"
        return s
    if s.startswith("void "):
        s = s[5:]
    depth, cut = 0, len(s)
    for i, ch in enumerate(s):  # drop the parameter list: the first '(' at template depth 0
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and not s.startswith("(anonymous", i):
            cut = i
            break
    s = s[:cut]
    s = s.replace("(anonymous namespace)::", "")
    return re.sub(r"\b\w+::", "", s)


def _int_constants(text: str) -> dict[str, str]:
    return dict(re.findall(r"constexpr\s+(?:int|int32_t|int64_t|unsigned)\s+(\w+)\s*=\s*([^;]+);", text))


def _eval_int(expr: str, consts: dict[str, str], depth: int = 0) -> int | None:
    expr = expr.strip()
    if depth > 8:
        return None
    names = set(re.findall(r"[A-Za-z_]\w*", expr))
    values = {}
    for n in names:
        if n not in consts:
            return None
        v = _eval_int(consts[n], consts, depth + 1)
        if v is None:
            return None
        values[n] = v
    if not re.fullmatch(r"[\w\s+\-*/()]+", expr):
        return None
    try:
        return int(eval(expr.replace("/", "//"), {"__builtins__": {}}, values))  # noqa: S307 (digits and names only)
    except Exception:  # noqa: BLE001
        return None


def _split_top(args: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in args:
        if ch in "(<[{":
            depth += 1
        elif ch in ")>]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def launch_sites(source: Path) -> dict[str, list[tuple[int | None, str | None]]]:
    """kernel base name -> [(block size or None, dynamic smem expression or None)] of every
    `kernel<<<grid, block[, smem[, stream]]>>>` in the file and the headers it includes from its folder."""
    texts = [source.read_text()]
    for inc in re.findall(r'#include\s+"([^"]+)"', texts[0]):
        p = source.parent / inc
        if p.exists():
            texts.append(p.read_text())
    consts: dict[str, str] = {}
    for t in texts:
        consts.update(_int_constants(t))
    sites: dict[str, list[tuple[int | None, str | None]]] = {}
    for m in re.finditer(r"(\w+)\s*(?:<[^<>;]*(?:<[^<>;]*>[^<>;]*)*>)?\s*<<<(.*?)>>>", texts[0], re.S):
        args = _split_top(m.group(2))
        block = _eval_int(args[1], consts) if len(args) > 1 else None
        smem = args[2] if len(args) > 2 else "0"
        sites.setdefault(m.group(1), []).append((block, smem))
    return sites


# --- tools and compilation ---------------------------------------------------------------------------


def find_nvcc() -> str:
    for cand in (os.environ.get("CUDACXX"), os.environ.get("CUDA_HOME") and os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc"),
                 shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise ToolError("nvcc not found: set CUDACXX or CUDA_HOME, or put CUDA 13's bin/ on PATH")


def find_tool(name: str, tools_dir: str | None, nvcc: str) -> str:
    """nvdisasm / cuobjdump: --tools-dir, next to nvcc, PATH, then the pip wheels' nvidia/cu*/bin."""
    cands = [os.path.join(tools_dir, name)] if tools_dir else []
    cands += [os.path.join(os.path.dirname(nvcc), name), shutil.which(name) or ""]
    try:
        import nvidia  # namespace package of the CUDA wheels

        for base in nvidia.__path__:
            cands += sorted(str(p) for p in Path(base).glob(f"cu*/bin/{name}"))
    except ImportError:
        pass
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise ToolError(f"{name} not found (CUDA toolkit bin/, PATH, pip wheels): {SASS_EXTRA}, or --tools-dir DIR")


def cutlass_include() -> str | None:
    try:
        import cutlass_library
    except ImportError:
        return None
    inc = Path(cutlass_library.__file__).parent / "source" / "include"
    return str(inc) if (inc / "cutlass" / "cutlass.h").exists() else None


def kernel_files(arch: str, with_cutlass: bool, only: list[str] | None = None) -> list[str]:
    files = sorted(str(p.relative_to(KERNELS)) for p in KERNELS.rglob("*.cu"))
    files = [f for f in files if f != CUTLASS_FILE or (with_cutlass and arch == "sm_100a")]
    return [f for f in files if not only or f in only]


def _tree_hash() -> str:
    h = hashlib.sha256()
    for base in (INCLUDE, KERNELS):
        for p in sorted(base.rglob("*")):
            if p.suffix in (".h", ".cuh", ".hpp", ".inl"):
                h.update(str(p.relative_to(ROOT)).encode())
                h.update(p.read_bytes())
    return h.hexdigest()


def compile_flags(arch: str, rel: str) -> list[str]:
    # csrc/kernels/CMakeLists.txt in a Release build: -O3 -DNDEBUG, C++17, -lineinfo, the public
    # include dir and the kernel folder; the CUTLASS file adds --expt-relaxed-constexpr.
    flags = [f"-arch={arch}", "-cubin", "-O3", "-DNDEBUG", "-std=c++17", "-lineinfo", "-DQWEN35_HAVE_CUDA=1",
             f"-I{INCLUDE}", f"-I{KERNELS}", "-Xptxas", "-v"]
    if rel == CUTLASS_FILE:
        inc = cutlass_include()
        if not inc:
            raise ToolError("--with-cutlass needs the CUTLASS headers: pip install --no-deps nvidia-cutlass==4.2.0.0")
        flags += ["--expt-relaxed-constexpr", "-isystem", inc]
    return flags


def compile_one(nvcc: str, nvcc_version: str, tree: str, arch: str, rel: str, out_dir: Path) -> tuple[Path, Path, bool]:
    """Compile csrc/kernels/<rel> for `arch` unless the cached cubin's key matches. Returns
    (cubin, ptxas log, rebuilt)."""
    stem = rel.replace("/", "__").removesuffix(".cu")
    cubin, log, keyf = out_dir / f"{stem}.cubin", out_dir / f"{stem}.ptxas.txt", out_dir / f"{stem}.key"
    src = KERNELS / rel
    flags = compile_flags(arch, rel)
    key = hashlib.sha256("\n".join([nvcc_version, tree, " ".join(flags), src.read_text()]).encode()).hexdigest()
    if cubin.exists() and log.exists() and keyf.exists() and keyf.read_text() == key:
        return cubin, log, False
    r = subprocess.run([nvcc, *flags, "-o", str(cubin), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        raise ToolError(f"nvcc failed on {rel} for {arch}:\n{r.stderr[-4000:]}")
    log.write_text(r.stdout + r.stderr)
    keyf.write_text(key)
    return cubin, log, True


def run_probe(nvcc: str, nvcc_version: str, build_dir: Path) -> list[dict]:
    exe, keyf = build_dir / "sass_launch_probe", build_dir / "sass_launch_probe.key"
    key = hashlib.sha256((nvcc_version + _tree_hash() + PROBE.read_text()).encode()).hexdigest()
    if not (exe.exists() and keyf.exists() and keyf.read_text() == key):
        r = subprocess.run([nvcc, "-std=c++17", "-DQWEN35_HAVE_CUDA=1", f"-I{INCLUDE}", f"-I{KERNELS}", "-o", str(exe),
                            str(PROBE)], capture_output=True, text=True)
        if r.returncode != 0:
            raise ToolError(f"nvcc failed on {PROBE.name}:\n{r.stderr[-4000:]}")
        keyf.write_text(key)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def parse_ptxas(text: str) -> dict[str, dict[str, int]]:
    """ptxas -v -> {mangled entry: regs, spill_stores, spill_loads, stack, static_smem, barriers}."""
    res: dict[str, dict[str, int]] = {}
    cur = None
    for line in text.splitlines():
        m = re.search(r"(?:Compiling entry function|Function properties for) '?([\w$.]+)'?", line)
        if m:
            cur = res.setdefault(m.group(1), {"regs": 0, "spill_stores": 0, "spill_loads": 0, "stack": 0,
                                              "static_smem": 0, "barriers": 0})
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur["stack"], cur["spill_stores"], cur["spill_loads"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["regs"] = int(m.group(1))
            b = re.search(r"used (\d+) barriers", line)
            s = re.search(r"(\d+) bytes smem", line)
            cur["barriers"] = int(b.group(1)) if b else 0
            cur["static_smem"] = int(s.group(1)) if s else 0
    return res


def max_threads(cuobjdump: str, cubin: Path) -> dict[str, int]:
    """EIATTR_MAX_THREADS (from __launch_bounds__) per mangled kernel."""
    out = subprocess.run([cuobjdump, "-elf", str(cubin)], capture_output=True, text=True, check=True).stdout
    res, cur = {}, None
    lines = out.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\.nv\.info\.(\S+)$", line.strip())
        if m:
            cur = m.group(1)
        elif cur and "EIATTR_MAX_THREADS" in line:
            for nxt in lines[i + 1:i + 4]:
                v = re.search(r"Value:\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)", nxt)
                if v:
                    res[cur] = math.prod(int(x, 16) for x in v.groups())
                    break
    return res


# --- the table ---------------------------------------------------------------------------------------------


def _match_probe(name: str, probe: list[dict]) -> dict | None:
    # w4a16_gemm_kernel<Config<BM, BN, WM, WN, STAGES[, MIN_CTAS]>, swiglu[, fast[, fragments]]>
    m = re.match(r"w4a16_gemm_kernel<Config<(\d+), (\d+), (\d+), (\d+), (\d+)(?:, \d+)?>, (true|false)"
                 r"(?:, (?:true|false))?(?:, (true|false))?>", name)
    if m:
        bm, bn, wm, wn, st = map(int, m.groups()[:5])
        sw, frag = m.group(6) == "true", m.group(7) == "true"
        for p in probe:
            if p["kernel"] == "w4a16_gemm_kernel" and (p["bm"], p["bn"], p["wm"], p["wn"], p["stages"], p["swiglu"],
                                                       p.get("fragments", False)) == (bm, bn, wm, wn, st, sw, frag):
                return p
    m = re.match(r"(gdn_chunk_\w+_kernel)<(\d+)>", name)
    if m:
        for p in probe:
            if p["kernel"] == m.group(1) and p.get("dk") == int(m.group(2)):
                return p
    return None


def weight_bytes(loop: Loop, cfg: dict) -> tuple[float | None, str]:
    """Weight bytes per issued warp instruction of a W4A16 k-loop iteration (module docstring)."""
    mmas_per_iter = cfg["ops"] * cfg["mi"] * cfg["ni"] * (cfg["bk"] // 16)
    if loop.mma != mmas_per_iter or not loop.insts:
        return None, f"n/a ({loop.mma} MMAs, k-loop has {mmas_per_iter})"
    warps = cfg["threads"] // 32
    bytes_iter = cfg["b_rows"] * (cfg["bk"] // 2 + cfg["bk"] // 16)
    return bytes_iter / (loop.insts * warps), f"{cfg['b_rows']} x ({cfg['bk'] // 2} + {cfg['bk'] // 16}) / ({loop.insts} x {warps})"


def analyse_arch(arch: str, args: argparse.Namespace, nvcc: str, nvcc_version: str, tools: dict[str, str],
                 probe: list[dict]) -> list[dict]:
    out_dir = Path(args.build_dir) / arch
    out_dir.mkdir(parents=True, exist_ok=True)
    tree = _tree_hash()
    files = kernel_files(arch, args.with_cutlass, args.file)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(args.jobs, 2))) as pool:
        built = dict(zip(files, pool.map(lambda f: compile_one(nvcc, nvcc_version, tree, arch, f, out_dir), files)))
    lim = ARCH_LIMITS[arch]
    kernels = []
    for rel, (cubin, log, rebuilt) in built.items():
        if rebuilt:
            print(f"compiled {rel} for {arch}", file=sys.stderr)
        ptxas = parse_ptxas(log.read_text())
        bounds = max_threads(tools["cuobjdump"], cubin)
        sass = subprocess.run([tools["nvdisasm"], "-c", str(cubin)], capture_output=True, text=True, check=True).stdout
        funcs = parse_sass(sass)
        names = demangle(sorted(funcs))
        sites = launch_sites(KERNELS / rel)
        for mangled, (insts, labels) in sorted(funcs.items(), key=lambda kv: short_name(names[kv[0]], kv[0])):
            if mangled not in bounds and mangled not in ptxas:
                continue
            name = short_name(names[mangled], mangled)
            base = name.split("<")[0]
            res = ptxas.get(mangled, {})
            cfg = _match_probe(name, probe)
            site = sites.get(base, [])
            threads = bounds.get(mangled) or next((b for b, _ in site if b), None)
            if cfg is not None:
                dyn, dyn_src = cfg["dynamic_smem"], "launcher"
            elif site and all(s.strip() == "0" for _, s in site):
                dyn, dyn_src = 0, "none"
            else:
                dyn, dyn_src = None, "static only"
            smem = res.get("static_smem", 0) + (dyn or 0)
            occ = occupancy(res.get("regs", 0), threads, smem, lim) if threads else None
            loops = hot_loops(find_loops(insts, labels))
            for lp in loops:
                if cfg is not None and base == "w4a16_gemm_kernel" and lp.role == "inner":
                    lp.weight_bytes_per_inst, lp.weight_note = weight_bytes(lp, cfg)
            kernels.append({
                "arch": arch, "file": rel, "kernel": name, "mangled": mangled,
                "regs": res.get("regs"), "spill_stores": res.get("spill_stores"), "spill_loads": res.get("spill_loads"),
                "static_smem": res.get("static_smem", 0), "dynamic_smem": dyn, "dynamic_smem_source": dyn_src,
                "threads": threads, "ctas_per_sm": occ[0] if occ else None, "limiter": occ[1] if occ else None,
                "ctas_by_limit": occ[2] if occ else None, "instructions": len(insts),
                "loops": [{**{k: v for k, v in dataclasses.asdict(lp).items() if k != "addrs"}, "insts_per_mma": lp.per_mma(lp.insts),
                           "lds_per_mma": lp.per_mma(lp.lds), "ldg_per_mma": lp.per_mma(lp.ldg)} for lp in loops],
            })
    return kernels


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown(arch: str, kernels: list[dict]) -> str:
    rows = [f"### {arch}: {HEADER}", "",
            "| file | kernel | regs | spills st/ld B | smem B (static+dyn) | threads | CTAs/SM (limit) "
            "| loop | insts | MMA (eq.) | insts/MMA | LDS/MMA | LDG/MMA | BAR/iter | weight B/inst |",
            "|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k in kernels:
        dyn = k["dynamic_smem"]
        smem = f"{k['static_smem']}+{dyn}" if dyn is not None else f"{k['static_smem']} (static only)"
        occ = f"{k['ctas_per_sm']} ({k['limiter']})" if k["ctas_per_sm"] is not None else "n/a"
        head = [k["file"], f"`{k['kernel']}`", str(k["regs"]), f"{k['spill_stores']}/{k['spill_loads']}", smem,
                str(k["threads"] or "n/a"), occ]
        loops = k["loops"] or [None]
        for i, lp in enumerate(loops):
            cells = head if i == 0 else ["", "", "", "", "", "", ""]
            if lp is None:
                cells = cells + ["no loop"] + [""] * 7
            else:
                mma = f"{lp['mma']}" + (f" ({lp['mma_eq']:g})" if lp["mma_eq"] != lp["mma"] else "")
                if lp["mma"]:
                    per = [_fmt(lp["insts_per_mma"], 1), _fmt(lp["lds_per_mma"]), _fmt(lp["ldg_per_mma"])]
                else:  # no MMA to divide by: the loads per iteration
                    per = ["n/a", f"{lp['lds']}/iter", f"{lp['ldg']}/iter"]
                cells = cells + [f"{lp['role']} @{lp['head']:#x}", str(lp["insts"]), mma, *per, str(lp["bar"]),
                                 _fmt(lp["weight_bytes_per_inst"]) if lp["weight_note"] else ""]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=HEADER)
    ap.add_argument("--arch", action="append", choices=sorted(ARCH_LIMITS), help="default: sm_90a and sm_100a")
    ap.add_argument("--file", action="append", help="only these kernel files (relative to csrc/kernels)")
    ap.add_argument("--with-cutlass", action="store_true", help=f"also {CUTLASS_FILE} for sm_100a (slow, 4-5 GB)")
    ap.add_argument("--build-dir", default=str(ROOT / "build" / "sass"))
    ap.add_argument("--jobs", type=int, default=2, help="parallel nvcc processes (at most 2)")
    ap.add_argument("--tools-dir", help="folder holding nvdisasm and cuobjdump")
    ap.add_argument("--out", help="write the markdown tables to this file")
    ap.add_argument("--json", help="write the per-kernel records to this file")
    args = ap.parse_args(argv)
    archs = args.arch or ["sm_90a", "sm_100a"]
    try:
        nvcc = find_nvcc()
        tools = {t: find_tool(t, args.tools_dir, nvcc) for t in ("nvdisasm", "cuobjdump")}
        nvcc_version = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
        Path(args.build_dir).mkdir(parents=True, exist_ok=True)
        probe = run_probe(nvcc, nvcc_version, Path(args.build_dir))
        results = {arch: analyse_arch(arch, args, nvcc, nvcc_version, tools, probe) for arch in archs}
    except ToolError as e:
        print(f"sass_stats: {e}", file=sys.stderr)
        return 2
    md = "\n".join(markdown(a, ks) for a, ks in results.items())
    print(md)
    if args.out:
        Path(args.out).write_text(md)
    if args.json:
        meta = {"header": HEADER, "date": datetime.date.today().isoformat(), "machine": platform.node(),
                "nvcc": nvcc_version.strip().splitlines()[-1], "archs": archs}
        Path(args.json).write_text(json.dumps({"meta": meta, "kernels": [k for ks in results.values() for k in ks]},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
