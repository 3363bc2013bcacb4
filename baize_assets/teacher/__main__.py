"""``python -m baize_assets.teacher``: run the simulated teacher in the foreground."""

from baize_assets.teacher.server import main

raise SystemExit(main())
