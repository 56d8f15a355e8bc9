import sys

from rnnjax.cli import main

sys.exit(main())
