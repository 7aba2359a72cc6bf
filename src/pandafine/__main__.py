import sys

from pandafine.cli import main

sys.exit(main())
