import sys

from transcoder.ops.cli import main

sys.exit(main())
