import sys

from ..errors import run_module
from .conditioning import main

sys.exit(run_module(main))
