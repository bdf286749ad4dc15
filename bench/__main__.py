"""``python -m bench``: run the benchmarks (see ``bench/README.md``)."""

from .harness import main

raise SystemExit(main())
