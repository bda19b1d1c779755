import sys

from ..errors import run_guarded
from .conditioning import main

sys.exit(run_guarded(main))
