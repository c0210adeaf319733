# neural-tangents reference environment, parity check and kernel benchmark.
# Included from the main Makefile, which defines VENV, $(VENV)/.installed (the main
# environment) and python-venv (installs Debian's python3-venv when it is missing).
# neural-tangents 0.6.5 only works with jax <= 0.4.25, numpy 1.26 and TensorFlow,
# so it lives in its own pinned environment (see tests/parity/nt_reference.py).

PYTHON ?= python3
VENV ?= .venv
NT_VENV ?= .venv-nt
PARITY_DIR ?= .parity
NT_PINS := neural-tangents==0.6.5 jax==0.4.25 jaxlib==0.4.25 numpy==1.26.4 \
	ml_dtypes==0.5.4 scipy==1.17.1 tensorflow==2.21.0 tf2jax==0.3.6 frozendict==2.5.1

# Rebuilt when the pins (this file) change.
$(NT_VENV)/.installed: mk/parity.mk | python-venv
	$(PYTHON) -m venv $(NT_VENV)
	$(NT_VENV)/bin/python -m pip install --quiet uv
	$(NT_VENV)/bin/uv pip install --python $(NT_VENV)/bin/python $(NT_PINS)
	touch $@

$(PARITY_DIR)/reference.npz: tests/parity/nt_reference.py $(NT_VENV)/.installed
	TF_CPP_MIN_LOG_LEVEL=3 $(NT_VENV)/bin/python tests/parity/nt_reference.py --out $(PARITY_DIR)

.PHONY: parity bench-kernels
parity: $(PARITY_DIR)/reference.npz $(VENV)/.installed
	NNQS_PARITY_DIR=$(PARITY_DIR) $(VENV)/bin/python -m pytest -m parity tests/test_parity.py

bench-kernels: $(NT_VENV)/.installed $(VENV)/.installed
	$(VENV)/bin/python -m analysis.bench.kernels --nt-python $(NT_VENV)/bin/python
