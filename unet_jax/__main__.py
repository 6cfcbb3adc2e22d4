"""``python -m unet_jax``: the ``unet-jax`` command line (``unet_jax.cli``)."""
import sys

from unet_jax.cli import main

sys.exit(main())
