import sys

from hydratune.cli import main

sys.exit(main())
