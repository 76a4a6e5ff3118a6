# Developer and CI entry points: venv, mpy32, test, test-mpy, demo, office-demo, bench, image,
# emu, lint, clean.
#
# Needs only python3 (>= 3.11, for tomllib) and make. The tools come from pyproject.toml's
# [project.optional-dependencies], by use: each target installs the extra it needs into
# $(VENV) (tests, demo, lint, tools, office; `make venv` installs dev, all of them), and
# installs it again whenever that extra's list changes (tools/extras.py writes the list,
# $(VENV)/extra-NAME.txt; the stamp $(VENV)/.extra-NAME.stamp says it is installed).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
LINT_PATHS := $(wildcard firmware drivers tools tests boot.py main.py)
extra = $(VENV)/.extra-$(1).stamp

.PHONY: venv mpy32 deps test test-mpy demo office-demo bench image emu lint format clean distclean

venv: $(call extra,dev)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Rewritten only when the extra's list itself changes, so edits elsewhere in
# pyproject.toml (tool settings) don't trigger a reinstall.
$(VENV)/extra-%.txt: pyproject.toml tools/extras.py | $(PY)
	@$(PY) tools/extras.py $* > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi

$(VENV)/.extra-%.stamp: $(VENV)/extra-%.txt
	$(PY) -m pip install --disable-pip-version-check -q -r $<
	@touch $@

.PRECIOUS: $(VENV)/extra-%.txt $(VENV)/.extra-%.stamp

# micropython-lib packages the firmware uses (not in the tree; see tools/fetch_deps.py)
DEPS := lib/meterdeps/umqtt/simple.py

$(DEPS): tools/fetch_deps.py | $(PY)
	$(PY) tools/fetch_deps.py

deps: $(DEPS)

# The 32-bit MicroPython (the ESP32's object and small-int sizes) from the pinned source
# tarball, built offline once into build/mpy32 (needs gcc-multilib; tools/mpy32.py).
MPY_TARBALL ?= ../shared/vendor/micropython-1.28.0-src.tar.gz
MPY32 := build/mpy32/micropython

$(MPY32): $(wildcard $(MPY_TARBALL)) tools/mpy32.py | $(PY)
	$(PY) -m tools.mpy32 --tarball $(MPY_TARBALL) --out $(dir $@)
	@touch $@

mpy32: $(MPY32)

test: $(call extra,tests) $(DEPS) $(MPY32)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# One portable test module under both MicroPython builds, as the suite runs it (its heap
# included): make test-mpy T=tests/test_ledger.py
test-mpy: $(call extra,tests) $(DEPS) $(MPY32)
	@test -n "$(T)" || { echo "usage: make test-mpy T=tests/test_x.py" >&2; exit 2; }
	$(PY) -m pytest -q -rA "tests/test_zz_micropython.py::test_micropython[$(notdir $(T))@64]" \
		"tests/test_zz_micropython.py::test_micropython[$(notdir $(T))@32]"

demo: $(call extra,demo) $(DEPS)
	@mkdir -p out
	$(PY) -m tools.sim scenarios/household.json --report out/demo-report.json --plot out/demo.png \
		--screens out/screens --summary

# The office (tools/office) on SQLite sells to the simulated meter over mosquitto.
office-demo: $(call extra,tools) $(call extra,office) $(DEPS)
	$(PY) -m tools.office.demo

bench: venv $(DEPS)
	$(PY) tools/bench.py

# The meter's filesystem image and manifests in build/ (tools/build.py; BUILD_ARGS e.g.
# --geometry 8MB, --settings FILE --key FILE for a factory image), and that image booted
# on the emulated board for 10 s (tools/sim/emu.py; state kept in out/emu).
BUILD_ARGS ?=
image: $(call extra,tools) $(DEPS)
	$(PY) -m tools.build $(BUILD_ARGS)

emu: image
	$(PY) -m tools.sim.emu build/vfs.bin --state out/emu --fresh --seconds 10 --load 2000

lint: $(call extra,lint)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

format: $(call extra,lint)
	$(VENV)/bin/ruff format $(LINT_PATHS)

clean:
	rm -rf out build .pytest_cache .hypothesis .ruff_cache
	find . \( -path ./.git -o -path ./$(VENV) \) -prune -o \( -name __pycache__ -o -name '*.mpy' \) -print0 \
		| xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) lib
