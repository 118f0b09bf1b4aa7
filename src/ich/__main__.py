"""``python -m ich`` runs the ``ich`` command."""

from ich.cli import main

raise SystemExit(main())
