"""``python -m app``: same as the ``mlpulse`` command."""

from app.cli import main

raise SystemExit(main())
