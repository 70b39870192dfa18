"""The streaming demo end to end: a random micro int8 project (22 channels, 160-sample windows)
trained, as its checkpoint says, on robust-scaled windows, so the device runs the median/IQR
normalisation (radix selection) on the int16 counts; its demo firmware on the Cortex-M4F board
under QEMU fed a synthetic recording over the UART, every decision's logits bit for bit against
the int8 golden model on the windows as the host mirror normalises them; a corrupted frame
reported and held; the demo image of every real chip inside that chip's memory map; `make flash`
errors.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_quant_golden import eeg_like

from lumamba.firmware import ROOT as FIRMWARE_ROOT
from lumamba.montages import MONTAGES
from lumamba.quant import load_golden
from lumamba.stream import cli
from lumamba.stream.reference import apply_gaps, device_windows, quantise
from lumamba.stream.runner import build_demo, stream_to_board
from lumamba.train.data import save_npz_windows
from toolchain import require_toolchain

CHANNELS = list(MONTAGES["tcp22"])
T = 160
HOP = 64
N_DECISIONS = 4
CHIPS = ("nrf52840", "stm32f407vg", "alif-e7-m55", "gap9")


METHOD = "robust"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A random micro model recorded as trained on robust-scaled windows, int8, exported for the
    Cortex-M4F with the streaming demo (--app demo) and without verification (the int8 export tests
    verify that path); 2 calibration windows, robust-scaled as the model requires."""
    import torch

    from lumamba import CONFIGS, LuMamba
    from lumamba.checkpoint import save_checkpoint
    from lumamba.normalise import normalise, spec

    require_toolchain("cortex-m4f")
    root = tmp_path_factory.mktemp("stream")
    torch.manual_seed(0)
    model = LuMamba(CONFIGS["micro"], n_classes=2)
    model.preprocess = spec(METHOD)
    checkpoint = save_checkpoint(model, root / "micro.safetensors")
    calib = save_npz_windows(root / "calib.npz", normalise(eeg_like(2, len(CHANNELS), T, seed=3), METHOD), [0, 1],
                             CHANNELS, ["train", "train"], normalisation=METHOD)
    out = root / "micro"
    run = subprocess.run([sys.executable, "-m", "lumamba.export.cli", "--target", "cortex-m", "--checkpoint",
                          str(checkpoint), "--montage", "tcp22", "--n-samples", str(T), "--int8", "--calib-data",
                          str(calib), "--calib-windows", "2", "--precision", "int8", "--no-verify", "--app", "demo", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"streaming demo: {out / 'build' / 'cortex-m4f' / 'lumamba-demo.elf'}" in run.stdout
    assert (out / "build" / "cortex-m4f" / "lumamba-demo.elf").is_file()
    assert "#define LUMAMBA_NORMALISATION LUMAMBA_NORM_ROBUST" in (out / "model.h").read_text()
    return out


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """A continuous recording in microvolts, long enough for N_DECISIONS windows at 256 Hz, with a
    label that changes halfway."""
    n = T + (N_DECISIONS - 1) * HOP
    rng = np.random.default_rng(0)
    t = np.arange(n) / 256.0
    data = 30 * rng.standard_normal((len(CHANNELS), n)) + 40 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6, (len(CHANNELS), 1)))
    path = tmp_path_factory.mktemp("rec") / "rec.npz"
    np.savez(path, data=data, channels=np.array(CHANNELS), sfreq=256.0, labels=(np.arange(n) >= n // 2).astype(int))
    return path


def golden_bits(project: Path, counts: np.ndarray, starts: list[int], scale: np.float32) -> np.ndarray:
    logits = load_golden(project / "int8")(device_windows(counts, starts, T, scale, METHOD))
    return np.asarray(logits, np.float32).view(np.uint32)


def test_stream_on_cortex_m4f_is_bit_exact(project, recording, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["--project", str(project), "--recording", str(recording), "--out", str(out), "--fast",
                   "--hop", str(HOP)])
    log = capsys.readouterr().out
    assert rc == 0, log
    assert f"{N_DECISIONS} decisions on cortex-m4f: {N_DECISIONS} agree with the int8 golden model (bit-exact)" in log
    summary = json.loads((out / "decisions.json").read_text())
    assert summary["normalisation"] == METHOD and summary["uv_per_count"] == pytest.approx(0.1)   # the profile's
    decisions = summary["decisions"]
    assert [d["window"] for d in decisions] == list(range(N_DECISIONS))
    assert [d["start_s"] * 256 for d in decisions] == [k * HOP for k in range(N_DECISIONS)]
    assert summary["end"] == {"windows": N_DECISIONS, "decisions": N_DECISIONS, "frames": -(-(T + 3 * HOP) // 8),
                              "frame_errors": 0, "lost_frames": 0, "overruns": 0}
    assert all(d["insns"] > 1_000_000 and d["overruns"] == 0 and d["frame_errors"] == 0 for d in decisions)
    # the logits, recomputed here: the recording as the CLI preprocesses it, quantised to counts
    from lumamba.stream.recording import load_recording
    rec = load_recording(recording, CHANNELS)
    scale = np.float32(summary["uv_per_count"])
    counts, _ = quantise(rec.uv, scale)
    want = golden_bits(project, counts, [k * HOP for k in range(N_DECISIONS)], scale)
    got = np.array([[int(h, 16) for h in d["logits_bits"]] for d in decisions], np.uint32)
    np.testing.assert_array_equal(got, want)
    assert [d["class"] for d in decisions] == list(np.argmax(got.view(np.float32), axis=1))
    assert [d["label"] for d in decisions] == [0, 0, 1, 1]   # majority label of each window
    assert (out / "stream.png").stat().st_size > 10_000


def test_a_corrupted_frame_is_reported_and_held(project):
    elf = build_demo(project, "cortex-m4f", {"LUMAMBA_STREAM_HOP": str(HOP)})
    rng = np.random.default_rng(1)
    counts = rng.integers(-3000, 3000, size=(T + 2 * HOP, len(CHANNELS))).astype(np.int16)

    def corrupt(frames: list[bytes]) -> list[bytes]:
        bad = bytearray(frames[5])
        bad[20] ^= 0x01
        return frames[:5] + [bytes(bad)] + frames[6:]

    log, sent, text = stream_to_board(elf, "cortex-m4f", lambda header: counts, mangle=corrupt, timeout_s=300)
    assert log.frame_errors == ["crc"] and [(g.seq, g.frames) for g in log.gaps] == [(5, 1)]
    assert re.search(r"^FRAMEERR kind=crc count=1$", text, re.M)
    assert re.search(r"^FRAMEGAP seq=5 frames=1 filled=8$", text, re.M)
    assert log.end["frame_errors"] == 1 and log.end["lost_frames"] == 1
    assert [d.frame_errors for d in log.decisions] == [1, 1, 1]   # frame 5 arrived before window 0 ended
    # the device held the last good instant over the lost frame; the reference does the same
    held = apply_gaps(sent, [(5, 1)], 8)
    assert (held[40:48] == counts[39]).all()
    got = np.stack([d.logits for d in log.decisions]).view(np.uint32)
    np.testing.assert_array_equal(got, golden_bits(project, held, [0, HOP, 2 * HOP], log.header.uv_per_count))


def _regions(chip: str) -> dict[str, tuple[int, int]]:
    memory = json.loads((FIRMWARE_ROOT / "chips" / f"{chip}.json").read_text())["memory"]
    return {name: (int(r["origin"], 16), int(r["origin"], 16) + int(r["size"], 16)) for name, r in memory.items()}


def _sections(objdump: str, elf: Path) -> list[tuple[str, int, int, int, list[str]]]:
    """(name, size, vma, lma, flags) of every section, from `objdump -h`."""
    out = subprocess.run([objdump, "-h", str(elf)], capture_output=True, text=True, check=True).stdout.splitlines()
    rows = []
    for head, flags in zip(out, out[1:]):
        f = head.split()
        if len(f) == 7 and f[0].isdigit():
            rows.append((f[1], int(f[2], 16), int(f[3], 16), int(f[4], 16), [x.strip() for x in flags.split(",")]))
    return rows


def test_demo_images_lie_inside_each_chips_memory_map(project):
    for chip in CHIPS:
        board = json.loads((FIRMWARE_ROOT / "chips" / f"{chip}.json").read_text())["board"]
        require_toolchain(board, need_emulator=False)
        run = subprocess.run(["make", "-C", str(project), "-j2", "demo-app", f"CHIP={chip}"], capture_output=True,
                             text=True)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        elf = project / "build" / f"chip-{chip}" / "lumamba-demo.elf"
        objdump = "riscv64-unknown-elf-objdump" if board == "riscv32" else "arm-none-eabi-objdump"
        regions = _regions(chip)
        placed = {}
        for name, size, vma, lma, flags in _sections(objdump, elf):
            if "ALLOC" not in flags or size == 0:
                continue
            where = [r for r, (lo, hi) in regions.items() if lo <= vma and vma + size <= hi]
            assert where, f"{chip}: section {name} [{vma:#x}, {vma + size:#x}) is outside {regions}"
            placed[name] = where[0]
            if "LOAD" in flags:   # its initial contents are stored in flash
                lo, hi = regions["flash"]
                assert lo <= lma and lma + size <= hi, f"{chip}: {name} is loaded from {lma:#x}, outside flash"
        assert placed[".text"] == "flash" and placed[".bss"] == "ram" and len(placed) >= 4, (chip, placed)
        if "ccm" in regions:   # the STM32F407's ring buffer goes to its CCM, the arena keeps the SRAM
            assert placed[".ccm"] == "ccm", placed
            assert _symbol_address(objdump, elf, "s_ring_storage") == regions["ccm"][0]
        # no semihosting on a chip: it would stop a board without a debugger
        symbols = subprocess.run([objdump.replace("objdump", "nm"), str(elf)], capture_output=True, text=True).stdout
        assert "sys_semihost" not in symbols and "lumamba_board_putc" in symbols


def test_make_flash_names_what_is_missing(project, tmp_path):
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    run = subprocess.run(["make", "-C", str(project), "flash", "CHIP=nrf52840"], capture_output=True, text=True, env=env)
    assert run.returncode != 0 and "pyocd is not installed" in run.stderr
    fake = tmp_path / "pyocd"   # a pyOCD that finds no probe
    fake.write_text("#!/bin/sh\necho 'No available debug probes are connected'\n")
    fake.chmod(0o755)
    run = subprocess.run(["make", "-C", str(project), "flash", "CHIP=nrf52840"], capture_output=True, text=True, env=env)
    assert run.returncode != 0
    assert "no debug probe found; connect the nRF52840 DK's on-board interface MCU" in run.stderr
    run = subprocess.run(["make", "-C", str(project), "flash", "CHIP=gap9"], capture_output=True, text=True, env=env)
    assert run.returncode != 0 and "gap9 has no pyOCD target" in run.stderr


def test_bad_inputs_are_one_line_errors(project, recording, tmp_path, capsys):
    missing = tmp_path / "missing.npz"
    np.savez(missing, data=np.zeros((2, 400)), channels=np.array(["FP1-F7", "F7-T3"]), sfreq=256.0)
    assert cli.main(["--project", str(project), "--recording", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {missing}: channel(s) T3-T5") and err.count("\n") == 1
    assert cli.main(["--project", str(project), "--recording", str(recording), "--board", "pdp11"]) == 2
    assert "--board 'pdp11': unknown board" in capsys.readouterr().err
    assert cli.main(["--project", str(tmp_path), "--recording", str(recording)]) == 2
    assert "not a firmware project written by lumamba-export" in capsys.readouterr().err


def _symbol_address(objdump: str, elf: Path, name: str, size: bool = False) -> int:
    """The address (or with `size`, the size) of symbol `name` in `elf`, from nm."""
    out = subprocess.run([objdump.replace("objdump", "nm"), "-S", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    fields = next(line.split() for line in out.splitlines() if line.endswith(" " + name))
    return int(fields[1 if size else 0], 16)


def test_stm32_ring_is_cut_to_its_ccm(project):
    """A ring of window + hop instants that would not fit the STM32F407's 64 KiB CCM is cut to what
    fits (chips/stm32f407vg.mk LUMAMBA_RING_MAX_BYTES): 65536 // (2 * 22 channels) = 1489 instants;
    the nRF52840, which has no such region, keeps window + hop."""
    require_toolchain("cortex-m4f", need_emulator=False)
    hop = 1400                                             # 160 + 1400 = 1560 instants: 68,640 B
    for chip, instants in (("stm32f407vg", 65536 // (2 * 22)), ("nrf52840", 160 + hop)):
        run = subprocess.run(["make", "-C", str(project), "-j2", "demo-app", f"CHIP={chip}",
                              f"DEMO_DEFINES=-DLUMAMBA_STREAM_HOP={hop}"], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        elf = project / "build" / f"chip-{chip}" / "lumamba-demo.elf"
        assert _symbol_address("arm-none-eabi-objdump", elf, "s_ring_storage", size=True) == instants * 2 * 22
