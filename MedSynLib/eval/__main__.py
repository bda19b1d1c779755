import sys

from .conditioning import main

sys.exit(main())
