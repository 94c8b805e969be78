"""``python -m sql_dl.cli``: the ``sql-dl`` command."""

import sys

from sql_dl.cli.main import main

sys.exit(main())
