import sys

from exchange_server.cli import main

sys.exit(main())
