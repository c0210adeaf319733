# nnqs-suite: set-up, demo, tests. Each target builds the environment it needs.
PYTHON ?= python3
VENV ?= .venv
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test lint unit python-venv clean bench-training bench-entanglement slurm-up slurm-down
# Debian's python3 ships without venv/ensurepip unless python3-venv is installed.
python-venv:
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv)

$(VENV)/.installed: pyproject.toml | python-venv
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet uv
	$(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/nnqs run quickstart

# ruff, then the import contracts of pyproject.toml (layers, no cycles)
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

unit: setup
	$(VENV)/bin/python -m pytest -m "not parity" --durations=15

# The README's test command: lint, unit tests, then parity with neural-tangents.
test: lint unit parity

bench-training: setup
	$(VENV)/bin/python -m analysis.bench.training

bench-entanglement: setup
	$(VENV)/bin/python -m analysis.bench.entanglement

# The single-host SLURM of slurm/ (root): start, stop.
slurm-up:
	bash slurm/cluster.sh start

slurm-down:
	bash slurm/cluster.sh stop

clean:
	rm -rf $(VENV) $(NT_VENV) $(PARITY_DIR) .pytest_cache .ruff_cache build *.egg-info

include mk/parity.mk
include mk/wheelhouse.mk
