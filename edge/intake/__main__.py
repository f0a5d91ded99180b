"""`python -m edge.intake --broker HOST:PORT ...` (the same as `run_edge.py intake ...`)."""
import sys

from .cli import main

sys.exit(main())
