"""Flash regions: weights the internal flash cannot hold go to the board's external flash.

The planner is checked on its own (which arrays move, in which order, and the errors that name
the region and the bytes over); one CLI export then places a real model's weights outside an
internal flash made too small for it, and the emulated board computes bit-identical logits with
and without the placement, the moved arrays at the external region's address.
"""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from lumamba.export.project.boards import ExternalFlash, load_board, parse_target
from lumamba.export.project.build import build_project, elf_path
from lumamba.export.project.flash_regions import (XIP_SECTION, PlacementError, WeightArray, graph_runs,
                                                  linker_script_path, plan_placement, weight_arrays, write_placement)
from lumamba.export.project.memory_report import check_fits, memory_report, MemoryFitError
from lumamba.export.project.qemu import run_elf
from lumamba.export.project.test_vectors import N_VERIFIED
from toolchain import require_toolchain

BOARD = "cortex-m4f"


def board_with(flash_bytes: int, external_bytes: int | None):
    board = load_board(BOARD)
    external = None if external_bytes is None else ExternalFlash("test NOR", external_bytes, 0x18000000, "test")
    target = dataclasses.replace(board.target, name="TestChip", flash_bytes=flash_bytes, external_flash=external)
    return dataclasses.replace(board, target=target)


ARRAYS = [WeightArray(".rodata.lumamba_block0_fwd_c2", 16384, 80), WeightArray(".rodata.lumamba_head_out_c0", 512, 1),
          WeightArray(".rodata.lumamba_frontend_c4", 4096, 1), WeightArray(".rodata.lumamba_block0_fwd_c3", 1024, 80)]


def test_coldest_arrays_move_first_then_the_largest():
    placement = plan_placement(ARRAYS, 4000, board_with(20000, 1 << 20))
    assert [a.section for a in placement.external] == [".rodata.lumamba_frontend_c4"]
    placement = plan_placement(ARRAYS, 4097, board_with(20000, 1 << 20))
    assert [a.section for a in placement.external] == [".rodata.lumamba_frontend_c4", ".rodata.lumamba_head_out_c0"]
    assert placement.external_bytes == 4608 and placement.external_fetch_bytes == 4608
    placement = plan_placement(ARRAYS, 5000, board_with(20000, 1 << 20))
    assert placement.external[-1].section == ".rodata.lumamba_block0_fwd_c2"     # per-token: largest first
    assert placement.external_fetch_bytes == 4608 + 16384 * 80


def test_placement_errors_name_the_region_and_the_bytes_over():
    with pytest.raises(PlacementError, match=r"internal flash of TestChip: over by 1,000 bytes even with all 4 weight "
                                             r"arrays \(22,016 bytes\)"):
        plan_placement(ARRAYS, 23016, board_with(20000, 1 << 20))
    with pytest.raises(PlacementError, match=r"external flash of TestChip \(test NOR\): needs 20,992 bytes but has "
                                             r"10,000 \(over by 10,992 bytes\)"):
        plan_placement(ARRAYS, 5000, board_with(20000, 10000))
    with pytest.raises(PlacementError, match="has no external flash"):
        plan_placement(ARRAYS, 5000, board_with(20000, None))


def test_profile_external_flash_is_parsed_and_checked():
    board = load_board(BOARD)
    ext = board.target.external_flash
    assert ext.bytes == 8 << 20 and ext.origin == 0x18000000 and "IS25WX064" in ext.part and "am_bsp.h" in ext.source
    stand_in = board.emulator.external_flash
    flash = board.emulator.flash
    assert stand_in.size >= ext.bytes and stand_in.origin >= flash.origin + flash.size   # no overlap
    with pytest.raises(ValueError, match="external_flash.bytes 0 must be positive"):
        parse_target({"name": "x", "flash_bytes": 1, "ram_bytes": 1,
                      "external_flash": {"part": "p", "bytes": 0, "origin": "0x0", "source": "s"}})
    with pytest.raises(KeyError):
        parse_target({"name": "x", "flash_bytes": 1, "ram_bytes": 1, "external_flash": {"bytes": 1}})


def test_graph_runs_and_weight_arrays(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"n_patches": 20, "schedule": [
        {"graph": "frontend", "loop": "once"}, {"graph": "block0_fwd", "loop": "forward"},
        {"graph": "block0_rev", "loop": "reverse"}, {"graph": "head_out", "loop": "once"}]}))
    runs = graph_runs(manifest)
    assert runs == {"frontend": 1, "block0_fwd": 20, "block0_rev": 20, "head_out": 1}
    arrays = weight_arrays([(".rodata.lumamba_block0_fwd_c1", 64), (".rodata.lumamba_head_out_c0", 8),
                            (".text.lumamba_frontend_run", 100), (".rodata.lumamba_frontend_c0", 0)], runs)
    assert arrays == [WeightArray(".rodata.lumamba_block0_fwd_c1", 64, 20), WeightArray(".rodata.lumamba_head_out_c0", 8, 1)]
    assert graph_runs(tmp_path / "absent.json") == {}


@pytest.fixture(scope="module")
def placed_project(tmp_path_factory):
    """micro (float32) for the Cortex-M4F, checked against a chip whose internal flash holds only
    part of its weights."""
    require_toolchain(BOARD)
    root = tmp_path_factory.mktemp("regions")
    profile = root / "chip.json"
    profile.write_text(json.dumps({"target": {
        "name": "TestChip-320K", "flash_bytes": 320 * 1024, "ram_bytes": 2883584,
        "external_flash": {"part": "test octal NOR, 1 MiB", "bytes": 1 << 20, "origin": "0x18000000", "source": "test"}}}))
    out = root / "p"
    run = subprocess.run([sys.executable, "-m", "lumamba.export.cli", "--target", "cortex-m", "--config", "micro",
                          "--montage", "tcp22", "--n-samples", "640", "--board-profile", str(profile), "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    return out, profile, run.stdout


def test_export_places_weights_in_external_flash(placed_project):
    out, _, log = placed_project
    assert "placed in the external flash; relinking" in log
    memory = json.loads((out / "memory.json").read_text())
    ext = memory["external_flash"]
    assert memory["flash"]["fits"] and memory["flash"]["deployable"] <= 320 * 1024
    assert ext["fits"] and ext["weights"] > 0 and ext["arrays"] and ext["part"] == "test octal NOR, 1 MiB"
    report = json.loads((out / "report.json").read_text())
    assert report["regions"]["external_flash"]["used"] == ext["weights"]
    assert report["regions"]["internal_flash"] == {"used": memory["flash"]["deployable"], "limit": 320 * 1024}
    assert report["parity"]["max_abs_error"] <= 1e-4
    # the moved arrays lie in the emulated stand-in of the external flash
    board = load_board(BOARD)
    region = board.emulator.external_flash
    sections = subprocess.run(["arm-none-eabi-readelf", "-S", "-W", str(elf_path(out, BOARD))],
                              capture_output=True, text=True, check=True).stdout
    address = re.search(rf"{re.escape(XIP_SECTION)}\s+PROGBITS\s+([0-9a-f]+)", sections).group(1)
    assert int(address, 16) == region.origin


def test_placement_changes_addresses_not_results(placed_project, tmp_path):
    """The same project linked without the placement computes bit-identical logits."""
    out, _, _ = placed_project
    board = load_board(BOARD)
    placed = run_elf(elf_path(out, BOARD), board)
    copy = tmp_path / "unplaced"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    write_placement(copy, board, None)
    assert not linker_script_path(copy, board).exists()
    unplaced = run_elf(build_project(copy, board), board)
    assert len(placed.logits) == len(unplaced.logits) == N_VERIFIED
    for a, b in zip(placed.logits, unplaced.logits):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(MemoryFitError, match=r"flash needs [\d,]+ bytes but has 327,680"):
        check_fits(memory_report(elf_path(copy, BOARD), board_with(320 * 1024, 1 << 20), copy))


def test_too_small_external_flash_fails_naming_it(placed_project, tmp_path):
    _, profile, _ = placed_project
    data = json.loads(profile.read_text())
    data["target"]["external_flash"]["bytes"] = 4096
    small = tmp_path / "small.json"
    small.write_text(json.dumps(data))
    run = subprocess.run([sys.executable, "-m", "lumamba.export.cli", "--target", "cortex-m", "--config", "micro",
                          "--montage", "tcp22", "--n-samples", "640", "--board-profile", str(small), "--no-verify",
                          "--out", str(tmp_path / "p")], capture_output=True, text=True, timeout=900)
    assert run.returncode == 1
    assert "external flash of TestChip-320K (test octal NOR, 1 MiB): needs" in run.stderr
    assert "but has 4,096 (over by" in run.stderr
