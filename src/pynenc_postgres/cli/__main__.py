"""``python -m pynenc_postgres.cli``: the ``pynenc-postgres`` command."""

import sys

from pynenc_postgres.cli import main

sys.exit(main())
