"""The ``nnqs`` command line: the one layer that sits on top of ``jobs`` and ``analysis``."""
