"""`python -m buildpipe` is the `pipe` command."""

from .cli import main

raise SystemExit(main())
