"""``python -m agents.cli``: the ``prune-gym`` command without the installed script."""

from __future__ import annotations

import sys

from agents.cli import main

sys.exit(main())
