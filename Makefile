# The README's two commands. Both create (or refresh, when pyproject.toml changes) .venv.
PYTHON ?= python3
VENV ?= .venv
# torch is installed first and pinned, so pip resolves the rest against it instead of
# pulling another multi-GB build; override with e.g. `make test TORCH_SPEC=torch`.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
# the optional extras (Ray/RLlib pins gymnasium exactly; ONNX; the model zoos timm and
# torchvision) get an environment of their own. torchvision (and so timm) does not import with
# the main venv's torch 2.13, so this one gets the pair torchvision is built against.
EXTRAS_VENV ?= .venv-extras
EXTRAS_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-extras docs lint venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[test,docs]"
	touch $@

venv: $(VENV)/.installed

demo: venv  ## prune the embedded task to its budget and print the result table
	$(VENV)/bin/prune-gym demo --overwrite

test: venv  ## the test suite
	$(PY) -m pytest -q

$(EXTRAS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(EXTRAS_VENV)
	$(EXTRAS_VENV)/bin/python -c "import torchvision" 2>/dev/null || \
		$(EXTRAS_VENV)/bin/python -m pip install $(EXTRAS_TORCH_SPEC)
	$(EXTRAS_VENV)/bin/python -m pip install -e ".[test,ray,onnx,zoo]"
	touch $@

test-extras: $(EXTRAS_VENV)/.installed  ## the tests of the optional extras, in their own venv
	$(EXTRAS_VENV)/bin/python -m pytest -q tests/test_ray.py tests/test_export.py \
		tests/test_latency_model.py tests/test_zoo.py

docs: venv  ## the docs site, offline, warnings as errors, into docs/_build/html
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html

lint: venv
	$(VENV)/bin/ruff check prune_gym agents benchmarks tests leaderboard docs

clean:
	rm -rf $(VENV) $(EXTRAS_VENV)
