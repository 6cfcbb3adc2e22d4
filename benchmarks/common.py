"""What the benchmarks share: the one way to time calls, and random network parameters without compiling.

``time_calls`` times one function (a compiling first call, then ``repeats`` timed calls); ``time_interleaved``
times several in turns, so that a changing background load on shared CPUs hits all of them alike. Both wait for
JAX results (``block``) and report medians. JAX is imported only when needed, so ``--help`` stays light.
"""
from __future__ import annotations

import statistics
import time

__all__ = ["block", "time_calls", "time_interleaved", "throughput_s", "random_variables"]


def block(out):
    """Wait for a JAX result (a torch or NumPy one is ready already); returns it."""
    if hasattr(out, "block_until_ready"):
        out.block_until_ready()
    return out


def _summary(times, cpu=None, first=None) -> dict:
    out = {"median_s": float(statistics.median(times)) if times else None,
           "min_s": float(min(times)) if times else None, "times_s": times, "first_call_s": first}
    if cpu is not None:
        out["cpu_median_s"] = float(statistics.median(cpu))
    return out


def time_calls(fn, repeats: int, warmup: int = 1) -> dict:
    """Time ``fn()``: ``warmup`` untimed calls (the first one's time is 'first_call_s', None without warmup), then
    ``repeats`` timed ones. Returns {'median_s', 'min_s', 'times_s', 'first_call_s'} in wall-clock seconds and
    'result', the last call's return value."""
    first, out = None, None
    for i in range(warmup):
        t = time.perf_counter()
        block(fn())
        if i == 0:
            first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = block(fn())
        times.append(time.perf_counter() - t)
    return dict(_summary(times, first=first), result=out)


def time_interleaved(fns: dict, repeats: int, warmup: int = 1, block_size: int = 1) -> dict:
    """Time each ``fns[name](i)`` (``i`` distinct per call, e.g. a PRNG seed) in turns: ``warmup`` untimed calls
    each first (the first compiles, timed as 'first_call_s'), then rounds of ``block_size`` timed calls of each.

    With ``block_size`` > 1 every turn starts with one untimed call (after a switch the CPUs, caches and XLA's
    threads are cold), so the timed calls see a training loop's steady state. Returns {name: {'median_s',
    'min_s', 'cpu_median_s' (process CPU seconds, all threads), 'first_call_s', 'times_s'}}.
    """
    res = {name: {"times": [], "cpu": [], "first": None} for name in fns}
    for name, fn in fns.items():
        for i in range(warmup):
            t = time.perf_counter()
            block(fn(i))
            if i == 0:
                res[name]["first"] = time.perf_counter() - t
    i = warmup
    while any(len(r["times"]) < repeats for r in res.values()):
        for name, fn in fns.items():
            todo = min(block_size, repeats - len(res[name]["times"]))
            if todo <= 0:
                continue
            if block_size > 1:
                block(fn(i))
                i += 1
            for _ in range(todo):
                t, c = time.perf_counter(), time.process_time()
                block(fn(i))
                res[name]["times"].append(time.perf_counter() - t)
                res[name]["cpu"].append(time.process_time() - c)
                i += 1
    return {name: _summary(r["times"], r["cpu"], r["first"]) for name, r in res.items()}


def throughput_s(fn, n: int) -> float:
    """Seconds per call of ``n`` back-to-back calls of ``fn()``, waiting only for the last (pipelined)."""
    t = time.perf_counter()
    out = None
    for _ in range(n):
        out = fn()
    block(out)
    return (time.perf_counter() - t) / n


def random_variables(model, input_shape, seed=0):
    """He-normal random parameters of a flax ``model`` drawn with NumPy (no PRNG compilation per shape)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct(input_shape, jnp.float32))
    rs = np.random.RandomState(seed)

    def draw(s):
        if len(s.shape) > 1:
            return jnp.asarray(rs.randn(*s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1])), jnp.float32)
        return jnp.zeros(s.shape, jnp.float32)
    return jax.tree_util.tree_map(draw, shapes)
