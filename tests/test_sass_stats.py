"""bench/sass_stats.py: loop detection and per-loop counts on a synthetic nvdisasm listing, the
occupancy arithmetic on known numbers, and one real kernel file end to end (skipped without nvcc
and the disassemblers: pip install -e '.[sass]')."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("sass_stats", ROOT / "bench" / "sass_stats.py")
sass_stats = importlib.util.module_from_spec(_spec)
sys.modules["sass_stats"] = sass_stats  # dataclasses look their module up by name
_spec.loader.exec_module(sass_stats)

# nvdisasm -c style: a prologue, a k-loop (cp.async, barrier, ldmatrix, shared load, two MMAs)
# holding a nested copy loop without MMA, a slow path placed after EXIT that is entered by a
# forward branch and left by a backward one (not a loop), and the padding branch to itself.
LISTING = """
//--------------------- .text._Z6kernelPf --------------------------
        .section        .text._Z6kernelPf,"ax",@progbits
.text._Z6kernelPf:
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
        /*0020*/                   ISETP.GE.AND P0, PT, R0, 0x80, PT ;
        /*0030*/               @P0 EXIT ;
.L_x_0:
        /*0040*/                   LDGSTS.E.BYPASS.128 [R2], desc[UR4][R4.64] ;
        /*0050*/                   LDGDEPBAR ;
        /*0060*/                   DEPBAR.LE SB0, 0x1 ;
        /*0070*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
.L_x_1:
        /*0080*/                   LDS.64 R6, [R3] ;
        /*0090*/                   IADD3 R3, R3, 0x8, RZ ;
        /*00a0*/                   ISETP.NE.AND P1, PT, R3, R9, PT ;
        /*00b0*/               @P1 BRA `(.L_x_1) ;
        /*00c0*/                   LDSM.16.M88.4 R12, [R10] ;
        /*00d0*/                   HMMA.16816.F32.BF16 R16, R12, R6, R16 ;
        /*00e0*/                   HMMA.16816.F32.BF16 R20, R12, R8, R20 ;
        /*00f0*/                   FSETP.GEU.AND P2, PT, |R16|, 1.0e-30, PT ;
        /*0100*/              @!P2 BRA `(.L_x_2) ;
.L_x_3:
        /*0110*/                   IADD3 R11, R11, 0x1, RZ ;
        /*0120*/                   ISETP.GE.AND P3, PT, R11, R15, PT ;
        /*0130*/              @!P3 BRA `(.L_x_0) ;
        /*0140*/                   STG.E desc[UR4][R24.64], R16 ;
        /*0150*/                   EXIT ;
.L_x_2:
        /*0160*/                   MUFU.RCP R17, R16 ;
        /*0170*/                   BRA `(.L_x_3) ;
.L_x_4:
        /*0180*/                   BRA `(.L_x_4);
        /*0190*/                   NOP;
"""


def test_parse_finds_the_function_and_its_labels():
    funcs = sass_stats.parse_sass(LISTING)
    assert list(funcs) == ["_Z6kernelPf"]
    insts, labels = funcs["_Z6kernelPf"]
    assert len(insts) == 26
    assert labels == {".L_x_0": 0x40, ".L_x_1": 0x80, ".L_x_2": 0x160, ".L_x_3": 0x110, ".L_x_4": 0x180}
    assert insts[3].pred == "@P0" and insts[3].opcode == "EXIT"


def test_loops_are_natural_loops_and_counted():
    insts, labels = sass_stats.parse_sass(LISTING)["_Z6kernelPf"]
    loops = {lp.head: lp for lp in sass_stats.find_loops(insts, labels)}
    # The k-loop and its nested copy loop; neither the slow path's jump back (0x170 -> 0x110) nor
    # the padding branch is a loop.
    assert sorted(loops) == [0x40, 0x80]
    k, copy = loops[0x40], loops[0x80]
    assert k.contains(copy) and not copy.contains(k)
    # k-loop body: 0x40..0x130 (16 instructions) plus the slow path 0x160, 0x170 it reaches.
    assert (k.insts, k.mma, k.mma_eq, k.lds, k.ldg, k.bar) == (18, 2, 2.0, 2, 1, 1)
    assert k.per_mma(k.insts) == 9.0 and k.per_mma(k.lds) == 1.0
    assert (copy.insts, copy.mma, copy.lds) == (4, 0, 1)
    assert copy.per_mma(copy.insts) is None
    hot = sass_stats.hot_loops(list(loops.values()))
    assert [(lp.head, lp.role) for lp in hot] == [(0x40, "inner")]


def test_hot_loops_without_mma_report_the_largest():
    text = LISTING.replace("HMMA.16816.F32.BF16", "FFMA")
    insts, labels = sass_stats.parse_sass(text)["_Z6kernelPf"]
    hot = sass_stats.hot_loops(sass_stats.find_loops(insts, labels))
    assert [(lp.head, lp.role) for lp in hot] == [(0x40, "largest")]


def test_mma_equivalents():
    assert sass_stats.mma_equivalents("HMMA.16816.F32.BF16") == 1.0
    assert sass_stats.mma_equivalents("HMMA.1688.F32.TF32") == 0.5
    assert sass_stats.mma_equivalents("HGMMA.64x128x16.F32.BF16") == 64.0
    assert sass_stats.mma_equivalents("UTCQMMA.2CTA") is None
    assert sass_stats.classify("UTCQMMA.2CTA") == "mma" and sass_stats.classify("LDSM.16.M88.4") == "lds"
    assert sass_stats.classify("LDGDEPBAR") is None and sass_stats.classify("DEPBAR.LE") is None


def test_occupancy_on_known_numbers():
    lim = sass_stats.SmLimits()
    # 64 regs x 128 threads: 2048 regs per warp, 8 warps per sub-partition, 32 warps = 8 CTAs.
    assert sass_stats.occupancy(64, 128, 0, lim)[:2] == (8, "regs")
    # 94 regs round to 3072 per warp: 5 warps per sub-partition, 20 warps = 5 CTAs.
    assert sass_stats.occupancy(94, 128, 0, lim)[:2] == (5, "regs")
    # 128 regs x 256 threads: 4 warps per sub-partition, 16 warps = 2 CTAs.
    assert sass_stats.occupancy(128, 256, 87040, lim)[:2] == (2, "regs")
    # 33792 + 1 KiB reserved = 34816 B: 228 KiB / 34816 = 6 CTAs.
    ctas, limiter, by = sass_stats.occupancy(72, 128, 33792, lim)
    assert (ctas, limiter) == (6, "smem") and by["regs"] == 7
    # 18 regs x 256 threads: 8 CTAs by threads (2048 / 256).
    assert sass_stats.occupancy(18, 256, 0, lim)[:2] == (8, "threads")
    # Tiny blocks: the 32 CTA slots.
    assert sass_stats.occupancy(16, 32, 0, lim)[:2] == (32, "ctas")
    # Over the per-CTA shared memory limit: does not launch.
    assert sass_stats.occupancy(32, 128, 228 * 1024, lim)[0] == 0


def test_short_names():
    assert sass_stats.short_name(
        "void qwen35_trt::kernels::moe_detail::(anonymous namespace)::w4a16_gemm_kernel<"
        "qwen35_trt::kernels::moe_detail::w4a16::Config<16, 32, 1, 4, 6>, false>"
        "(qwen35_trt::kernels::moe_detail::w4a16::KernelArgs)") == "w4a16_gemm_kernel<Config<16, 32, 1, 4, 6>, false>"


def test_weight_bytes_formula():
    cfg = {"ops": 1, "mi": 1, "ni": 1, "bk": 64, "threads": 128, "b_rows": 32}
    lp = sass_stats.Loop(0, 0, insts=100, mma=4)
    value, note = sass_stats.weight_bytes(lp, cfg)
    assert value == pytest.approx(32 * 36 / (100 * 4))
    assert sass_stats.weight_bytes(sass_stats.Loop(0, 0, insts=100, mma=3), cfg)[0] is None


def _tools_or_skip():
    try:
        nvcc = sass_stats.find_nvcc()
        for tool in ("nvdisasm", "cuobjdump"):
            sass_stats.find_tool(tool, None, nvcc)
    except sass_stats.ToolError as e:
        pytest.skip(str(e))


def test_end_to_end_conv1d_sm90a(tmp_path):
    _tools_or_skip()
    out, js = tmp_path / "t.md", tmp_path / "t.json"
    rc = sass_stats.main(["--arch", "sm_90a", "--file", "gdn/conv1d.cu", "--build-dir", str(tmp_path / "b"),
                          "--out", str(out), "--json", str(js), "--jobs", "1"])
    assert rc == 0
    assert sass_stats.HEADER in out.read_text()
    kernels = json.loads(js.read_text())["kernels"]
    assert {k["kernel"] for k in kernels} == {f"causal_conv1d_kernel<{w}>" for w in range(2, 9)}
    for k in kernels:
        assert k["threads"] == 128 and k["dynamic_smem"] == 0 and 0 < k["regs"] <= 255
        assert k["ctas_per_sm"] >= 1 and k["loops"] and k["loops"][0]["insts"] > 0


def test_branch_kinds():
    inst = sass_stats.Inst
    assert not sass_stats._conditional(inst(0, "BRA", "`(.L_x_1)"))
    assert sass_stats._conditional(inst(0, "BRA", "`(.L_x_1)", pred="@!P0"))
    assert sass_stats._conditional(inst(0, "BRA.CONV", "UR14, `(.L_x_12)"))
    assert sass_stats._conditional(inst(0, "BRA.U", "!UP0, `(.L_x_12)"))
    brx = inst(0, "BRX", 'R6 -0x4a10 (*"BRANCH_TARGETS .L_x_331,.L_x_332,.L_x_333"*)')
    assert sass_stats._targets(brx) == [".L_x_331", ".L_x_332", ".L_x_333"]


def test_names_the_demangler_cannot_read():
    mangled = ("_ZN7cutlass13device_kernelINS_4gemm6kernel13GemmUniversalINS1_17GroupProblemShapeIN4cute5tupleIJiiiEEEEE"
               "NS1_10collective13CollectiveMmaINS1_51MainloopSm100ArrayTmaUmmaWarpSpecializedBlockScaledILi5EEEEEvNT_6ParamsE")
    assert sass_stats.short_name(mangled, mangled) == (
        "device_kernel<GemmUniversal<...MainloopSm100ArrayTmaUmmaWarpSpecializedBlockScaled...>>")
