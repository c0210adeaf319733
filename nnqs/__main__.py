"""``python -m nnqs`` is the ``nnqs`` command."""

import sys

from nnqs.cli import main

sys.exit(main())
