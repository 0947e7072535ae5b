import sys

from trackerbackup.cli import main

sys.exit(main())
