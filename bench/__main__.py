"""``python -m bench`` is ``engine bench``."""

import argparse
import sys

from .cli import add_bench_parser

parser = argparse.ArgumentParser(prog="python -m bench")
add_bench_parser(parser.add_subparsers(dest="command", required=True))
arguments = parser.parse_args(["bench", *sys.argv[1:]])
sys.exit(arguments.handler(arguments))
