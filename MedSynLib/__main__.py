import sys

from MedSynLib.cli import main

sys.exit(main())
