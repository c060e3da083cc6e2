import sys

from transcoder.cli import main

sys.exit(main())
