# Developer and CI entry points: venv, test, demo, office-demo, bench, image, emu, lint, clean.
#
# Needs only python3 (>= 3.11, for tomllib) and make. The dev tool list lives in
# pyproject.toml [project.optional-dependencies] dev; `make venv` installs it into $(VENV)
# and re-installs whenever that list changes (stamp: $(VENV)/.dev-deps.stamp).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
REQS := $(VENV)/dev-requirements.txt
STAMP := $(VENV)/.dev-deps.stamp
PYTEST_ARGS ?=
LINT_PATHS := $(wildcard firmware drivers tools tests boot.py main.py)

.PHONY: venv deps test demo office-demo bench image emu lint format clean distclean

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Rewritten only when the dev list itself changes, so edits elsewhere in pyproject.toml
# (tool settings) don't trigger a reinstall.
$(REQS): pyproject.toml | $(PY)
	@$(PY) -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(d["project"]["optional-dependencies"]["dev"]))' > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi

$(STAMP): $(REQS)
	$(PY) -m pip install --disable-pip-version-check -q -r $(REQS)
	@touch $@

# micropython-lib packages the firmware uses (not in the tree; see tools/fetch_deps.py)
DEPS := lib/meterdeps/umqtt/simple.py

$(DEPS): tools/fetch_deps.py | $(PY)
	$(PY) tools/fetch_deps.py

deps: $(DEPS)

test: venv $(DEPS)
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: venv $(DEPS)
	@mkdir -p out
	$(PY) -m tools.sim scenarios/household.json --report out/demo-report.json --plot out/demo.png \
		--screens out/screens --summary

# The office (tools/office) on SQLite sells to the simulated meter over mosquitto.
office-demo: venv $(DEPS)
	$(PY) -m tools.office.demo

bench: venv $(DEPS)
	$(PY) tools/bench.py

# The meter's filesystem image and manifests in build/ (tools/build.py; BUILD_ARGS e.g.
# --geometry 8MB, --settings FILE --key FILE for a factory image), and that image booted
# on the emulated board for 10 s (tools/sim/emu.py; state kept in out/emu).
BUILD_ARGS ?=
image: venv $(DEPS)
	$(PY) -m tools.build $(BUILD_ARGS)

emu: image
	$(PY) -m tools.sim.emu build/vfs.bin --state out/emu --fresh --seconds 10 --load 2000

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

format: venv
	$(VENV)/bin/ruff format $(LINT_PATHS)

clean:
	rm -rf out build .pytest_cache .hypothesis .ruff_cache
	find . \( -path ./.git -o -path ./$(VENV) \) -prune -o \( -name __pycache__ -o -name '*.mpy' \) -print0 \
		| xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) lib
