"""``python -m baize_assets.teacher``: run the simulated teacher in the foreground."""

from baize_assets.teacher.cli import main

raise SystemExit(main())
