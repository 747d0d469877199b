import sys

from serep_engine.cli import main

sys.exit(main())
