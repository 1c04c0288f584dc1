"""``python -m mzoo``: the ``mzoo`` command (also what torchrun starts: ``torchrun ... -m mzoo train ...``)."""

import sys

from mzoo.cli import main

sys.exit(main())
