import sys

from controlnet.cli import main

sys.exit(main())
