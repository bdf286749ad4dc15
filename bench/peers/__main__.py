"""``python -m bench.peers``: casework beside its peers (see ``bench/README.md``)."""

from .runner import main

raise SystemExit(main())
