"""``python -m lorun_peft.cli``: the ``lorun`` command."""

import sys

from .parser import main

sys.exit(main())
