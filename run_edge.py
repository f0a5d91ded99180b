#!/usr/bin/env python3
"""Entry point: `python run_edge.py` runs the bundled demo site; `python run_edge.py --help` lists commands."""
import sys

from edge.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
