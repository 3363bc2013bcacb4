# Set-up and the two front-door commands (see README):
#   make demo   install, then run the whole graph end to end on the offline defaults
#   make test   install, then run the whole test suite
PYTHON ?= python3
VENV := .venv
# The CPU build of torch is plenty for the tiny offline model; set TORCH to change it.
TORCH ?= torch==2.13.0

.PHONY: demo test dev clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet "$(TORCH)"
	$(VENV)/bin/python -m pip install --quiet -e ".[test,deploy]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/baize demo

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

dev: $(VENV)/.installed
	DAGSTER_HOME=$(CURDIR) $(VENV)/bin/dagster dev

clean:
	rm -rf data/output .dagster
