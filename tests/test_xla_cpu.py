import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from unet_jax import xla_cpu


def _env(**extra):
    """This environment without XLA_FLAGS and the opt-out variable (conftest.py set the flag for this process)."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_cpu.XLA_CPU_FLAGS_ENV)}
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def _probe(script, env):
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


_IMPORT_PROBE = """
import os
import unet_jax, unet_jax.metrics, unet_jax.weights
from unet_jax.xla_cpu import xla_cpu_flags_applied
print(repr(os.environ.get('XLA_FLAGS')), xla_cpu_flags_applied())
"""


@pytest.mark.parametrize("user_flags", [None, "--xla_backend_optimization_level=0"])
def test_import_leaves_xla_flags_unchanged(user_flags):
    env = _env() if user_flags is None else _env(XLA_FLAGS=user_flags)
    flags, applied = _probe(_IMPORT_PROBE, env)
    assert flags == repr(user_flags) and applied == "False"


_FLAG_PROBE = """
import os, jax, jax.numpy as jnp
import unet_jax
from unet_jax.xla_cpu import xla_cpu_flags_applied
returned = unet_jax.configure_cpu()
x, k = jnp.ones((1, 10, 10, 32)), jnp.ones((3, 3, 32, 32))
hlo = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), 'VALID',
              dimension_numbers=('NHWC', 'HWIO', 'NHWC'))).lower(x, k).compile().as_text()
print(returned, xla_cpu_flags_applied(), repr(os.environ.get('XLA_FLAGS', '')), '__ynn_fusion' in hlo)
"""


@pytest.mark.parametrize("opt_out", [False, True])
def test_configure_cpu_sets_xla_flags_unless_opted_out(opt_out):
    env = _env(**{xla_cpu.XLA_CPU_FLAGS_ENV: "0"}) if opt_out else _env()
    returned, applied, flags, conv_in_ynnpack = _probe(_FLAG_PROBE, env)
    assert returned == applied
    if opt_out:
        assert applied == "False" and xla_cpu.XLA_CPU_FLAGS[0] not in flags
    else:
        assert applied == "True" and xla_cpu.XLA_CPU_FLAGS[0] in flags
        assert conv_in_ynnpack == "False"   # the convolution runs on Eigen


def test_configure_cpu_respects_user_flags_and_started_backend(monkeypatch):
    monkeypatch.setitem(xla_cpu._xla_flags_state, "applied", xla_cpu.xla_cpu_flags_applied())   # restored after
    user = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
    monkeypatch.setenv("XLA_FLAGS", user)
    xla_cpu.configure_cpu()
    assert os.environ["XLA_FLAGS"] == user   # the user's own setting wins
    monkeypatch.delenv("XLA_FLAGS")
    jnp.ones(1).block_until_ready()          # the backend has started: too late, warn and change nothing
    if jax.default_backend() == "cpu" and xla_cpu._jaxlib_version() >= xla_cpu._MIN_JAXLIB:
        with pytest.warns(UserWarning, match="not in effect"):
            xla_cpu.configure_cpu()
    assert "XLA_FLAGS" not in os.environ
