# The offline kit for GPU nodes without internet (gpu/README.md). Included from the main
# Makefile, which defines VENV and $(VENV)/.installed (the environment whose versions are pinned).
# `make wheelhouse` downloads, here (network), the wheels a stock CUDA + JAX image lacks, for
# CPython $(NODE_PYTHON) on manylinux x86-64; on the node, `bash gpu/node-check.sh` installs them.

NODE_PYTHON ?= 3.12
WHEELHOUSE ?= wheelhouse

.PHONY: wheelhouse
wheelhouse: $(VENV)/.installed
	$(VENV)/bin/python -m gpu.wheelhouse --python-version $(NODE_PYTHON) --out $(WHEELHOUSE)
