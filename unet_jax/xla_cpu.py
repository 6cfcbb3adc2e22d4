"""Opt-in XLA:CPU tuning for the U-Net: ``configure_cpu()`` sets one XLA flag, before JAX starts its backend.

``XLA_CPU_FLAGS`` (``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``) leaves convolutions to Eigen
instead of YNNPACK (jaxlib 0.10's default on CPU), which makes CPU train steps 1.5-2x faster (BENCHMARKS.md).
Importing ``unet_jax`` changes no environment variable: entry points (``unet-jax``, the benchmarks, the test
suite) call ``configure_cpu()`` first. Host-side; it only touches ``os.environ["XLA_FLAGS"]`` and changes nothing
on GPUs and TPUs.
"""
from __future__ import annotations

import importlib.metadata
import os
import warnings

XLA_CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
XLA_CPU_FLAGS_ENV = "UNET_JAX_XLA_CPU_FLAGS"
_MIN_JAXLIB = (0, 10)
_xla_flags_state = {"applied": False}


def _jaxlib_version() -> tuple:
    try:
        return tuple(int(p) for p in importlib.metadata.version("jaxlib").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return (0, 0)


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # private API moved: assume started, change nothing
        return True


def configure_cpu() -> bool:
    """Append ``XLA_CPU_FLAGS`` to ``$XLA_FLAGS`` if JAX has not started a backend yet; call it before any JAX work.

    Nothing is changed when ``UNET_JAX_XLA_CPU_FLAGS=0`` (opt-out; also 'false', 'no', 'off'), when ``XLA_FLAGS``
    already names ``xla_cpu_experimental_ynn_fusion_type`` (yours wins), or for jaxlib < 0.10 (the flag is unknown
    there, and an unknown XLA flag aborts the process). Called after JAX started its CPU backend it changes nothing
    and warns (the flag would not take effect). Calling it again is harmless.

    Returns
    -------
    bool
        Whether the flag is in effect in this process's ``XLA_FLAGS`` (``xla_cpu_flags_applied()``).
    """
    if os.environ.get(XLA_CPU_FLAGS_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return xla_cpu_flags_applied()
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        _xla_flags_state["applied"] = "-individual_convolution" in flags
        return xla_cpu_flags_applied()
    if _jaxlib_version() < _MIN_JAXLIB:
        return xla_cpu_flags_applied()
    if _backends_started():
        import jax
        if jax.default_backend() == "cpu":
            warnings.warn(
                "unet_jax.configure_cpu() was called after JAX started its CPU backend, so its XLA flag "
                f"{' '.join(XLA_CPU_FLAGS)} (1.5-2x faster CPU train steps) is not in effect; call it before "
                f"running JAX code, or set it in XLA_FLAGS yourself (silence: {XLA_CPU_FLAGS_ENV}=0)",
                stacklevel=2)
        return xla_cpu_flags_applied()
    os.environ["XLA_FLAGS"] = " ".join([flags.strip(), *XLA_CPU_FLAGS]).strip()
    _xla_flags_state["applied"] = True
    return True


def xla_cpu_flags_applied() -> bool:
    """Whether ``XLA_CPU_FLAGS`` (convolutions on Eigen rather than YNNPACK) are in this process's ``XLA_FLAGS``."""
    return bool(_xla_flags_state["applied"])
