# The README's two commands. Both create (or refresh, when pyproject.toml changes) .venv.
PYTHON ?= python3
VENV ?= .venv
# torch is installed first and pinned, so pip resolves the rest against it instead of
# pulling another multi-GB build; override with e.g. `make test TORCH_SPEC=torch`.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: demo test lint venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[test]"
	touch $@

venv: $(VENV)/.installed

demo: venv  ## prune the embedded task to its budget and print the result table
	$(VENV)/bin/prune-gym demo --overwrite

test: venv  ## the test suite
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check prune_gym agents benchmarks tests

clean:
	rm -rf $(VENV)
