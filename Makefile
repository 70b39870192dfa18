# Set-up and everyday commands. `make test` and `make demo` work on a fresh clone:
# they create .venv (if missing), install the project with its pinned dependencies, and install
# the cross compilers and QEMU from Debian when missing (tools/install_toolchain.sh: as root or
# through password-less sudo; otherwise it prints the apt-get command).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PYTEST  := $(VPY) -m pytest

.PHONY: venv toolchain test test-slow test-all demo stream-demo demo-model clean

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

toolchain:
	bash tools/install_toolchain.sh

# Default suite: everything not marked slow (CI budget).
test: $(STAMP)
	@bash tools/install_toolchain.sh || echo "make test: continuing; the tests that need a missing tool are skipped"
	$(PYTEST) -q -n 2 --dist loadfile

# Slow suite: run before every submission.
test-slow: $(STAMP)
	$(PYTEST) -q -m slow

test-all: $(STAMP)
	$(PYTEST) -q -m "slow or not slow" -n 2 --dist loadfile

# The main job on the bundled demo model: int8 firmware for the Cortex-M4F, calibrated on a
# generated synthetic corpus, built, run in QEMU bit for bit against the golden model, with the
# float vs int8 AUROC drift, with the automatic per-layer precision, plus the streaming demo ELF
# (lumamba-stream drives it); writes out/lumamba-cortex-m (~10 min on 2 shared cores, most of
# it the precision plan; --precision int8 skips it).
demo: $(STAMP) toolchain
	$(VENV)/bin/lumamba-export --target cortex-m --int8 --app demo

# The demo firmware on live EEG: a 30 s synthetic recording (a normal subject, then an abnormal
# one) streamed to the `make demo` project on the emulated Cortex-M4F, every decision checked bit
# for bit; writes out/stream/decisions.json and out/stream/stream.png (~1 min).
stream-demo: $(STAMP) toolchain
	test -f out/lumamba-cortex-m/Makefile || $(MAKE) demo
	$(VPY) tools/stream_recording.py --out out/stream/rec.npz
	$(VENV)/bin/lumamba-stream --project out/lumamba-cortex-m --recording out/stream/rec.npz --fast --out out/stream

# Re-train the bundled demo model (lumamba/assets/demo_model.*) from scratch (~6-10 min on 2 cores).
demo-model: $(STAMP)
	$(VPY) tools/train_demo_model.py --out runs/demo

clean:
	rm -rf out build dist *.egg-info .pytest_cache
