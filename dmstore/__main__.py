import sys

from dmstore.cli import main

sys.exit(main())
