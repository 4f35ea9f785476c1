import sys

from bnnns.bench._legacy import main

sys.exit(main())
