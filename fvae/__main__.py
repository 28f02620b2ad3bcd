"""``python -m fvae``: the ``fvae`` command."""
import sys

from fvae.cli import main

sys.exit(main())
