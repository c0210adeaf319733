"""The offline kit for GPU nodes without internet: the wheelhouse and the node check.

``python -m gpu.wheelhouse`` (``make wheelhouse``) downloads, on a machine with network, the
wheels that a stock CUDA + JAX image lacks; ``gpu/node-check.sh`` installs them on the node
(``python -m gpu.install``) next to the image's JAX and runs ``analysis.node_check``.
:mod:`gpu.wheels` holds what both sides share and needs only the standard library.
"""
