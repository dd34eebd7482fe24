"""``python -m mlpulse``: same as the ``mlpulse`` command."""

from .cli import main

raise SystemExit(main())
