"""``python -m proxy --kserve_url ...``: the proxy alone, in front of a KServe predictor (``proxy.run``)."""

import sys

from proxy.run import main

sys.exit(main())
