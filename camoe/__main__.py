"""``python -m camoe`` = the ``camoe`` command."""

import sys

from camoe.cli import main

sys.exit(main())
