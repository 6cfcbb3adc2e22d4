import os
from pathlib import Path

import pytest

import unet_jax

# Before JAX starts its backend: the XLA:CPU flag of unet_jax.xla_cpu keeps the suite (and the subprocesses it
# starts, which inherit XLA_FLAGS) as fast as the command line.
unet_jax.configure_cpu()

REPO = Path(__file__).resolve().parents[1]
ISBI_DIR = Path(os.environ.get("UNET_JAX_ISBI_DIR", REPO.parent / "shared" / "data" / "isbi2012"))


@pytest.fixture(scope="session")
def isbi_dir():
    """The real ISBI 2012 stacks (../shared/data/isbi2012 beside the repository, or $UNET_JAX_ISBI_DIR)."""
    if not (ISBI_DIR / "train-labels.tif").exists():
        message = f"ISBI 2012 data (train-volume.tif, train-labels.tif) not found in {ISBI_DIR}; set UNET_JAX_ISBI_DIR"
        if os.environ.get("CI"):       # CI must run them: a missing folder cannot pass unnoticed
            pytest.fail(message)
        pytest.skip(message)
    return ISBI_DIR
