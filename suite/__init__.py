"""nnqs-suite: infinite neural network quantum states at HPC scale.

Importing the package enables JAX's 64-bit mode: kernels and dynamics are
compared with theory in float64 (``docs/theory.md``). Finite-width
ensembles may still run in float32 where their caller asks for it.
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
