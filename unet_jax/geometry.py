"""Tile geometry of the U-Net: which input sizes are valid, the output size and border of a tile, and FLOPs.

Pure integer arithmetic on side lengths in pixels (no JAX): each 3x3 convolution trims 2 pixels with VALID padding
(the paper's; none with SAME), each 2x2 max-pool halves the size and needs it even, each 2x2 up-convolution
doubles it. For the paper network (depth 4, VALID) a 572 input tile gives a 388 output (``output_size``), the
border is 92 pixels a side (``border``) and valid inputs are 16k + 12 from 188 on (``valid_input_sizes``).
"""
from __future__ import annotations

from typing import Optional

from unet_jax import checks
from unet_jax.checks import InvalidInputError

PADDINGS = ("VALID", "SAME")


def _trace_valid(size: int, depth: int) -> Optional[int]:
    """Output size for VALID padding, or None where a pool sees an odd size or a size drops to <= 0."""
    s = size
    for _ in range(depth):
        s -= 4
        if s <= 0 or s % 2:
            return None
        s //= 2
    s -= 4
    if s <= 0:
        return None
    for _ in range(depth):
        s = 2 * s - 4
        if s <= 0:
            return None
    return s


def _min_bottom(depth: int) -> int:
    """Smallest bottleneck size b (after the bottom convs) for which every decoder level stays positive."""
    b = 1
    while _decoder_out(b, depth) is None:
        b += 1
    return b


def _decoder_out(b: int, depth: int) -> Optional[int]:
    s = b
    for _ in range(depth):
        s = 2 * s - 4
        if s <= 0:
            return None
    return s


def _valid_in_from_bottom(b: int, depth: int) -> int:
    # Inverse of the contracting path: before the bottom convs b + 4, then each level doubles and adds 4.
    s = b + 4
    for _ in range(depth):
        s = 2 * s + 4
    return s


def valid_input_sizes(depth: int = 4, upto: int = 4096):
    """All valid VALID-padding input sizes up to ``upto`` (for depth 4: 188, 204, ..., 572, ... = 16k + 12)."""
    checks.integer("depth", depth, 1)
    b = _min_bottom(depth)
    out = []
    while (s := _valid_in_from_bottom(b, depth)) <= upto:
        out.append(s)
        b += 1
    return out


def _nearest_valid(size: int, depth: int, padding: str) -> tuple:
    if padding == "SAME":
        m = 2 ** depth
        lo = max(m, (size // m) * m)
        return (lo, lo + m) if lo < size else (lo,)
    b = _min_bottom(depth)
    lo, hi = None, None
    while True:
        s = _valid_in_from_bottom(b, depth)
        if s < size:
            lo = s
        else:
            hi = s
            break
        b += 1
    return tuple(x for x in (lo, hi) if x is not None)


def output_size(size: int, depth: int = 4, padding: str = "VALID") -> int:
    """The U-Net's output side for an input side ``size`` (388 for 572 with depth 4, VALID; ``size`` for SAME).
    An invalid size (a 2x2 max-pool would see an odd size, or nothing is left) raises InvalidInputError naming the
    nearest valid sizes."""
    checks.one_of("padding", padding, PADDINGS)
    checks.integer("depth", depth, 1)
    size = checks.integer("size", size)
    if size <= 0:
        raise InvalidInputError(f"size must be positive, got {size}")
    if padding == "SAME":
        if size % (2 ** depth):
            raise InvalidInputError(
                       f"input size {size} is not valid for depth {depth} with SAME padding: it must be a multiple of "
                       f"{2 ** depth}; nearest valid sizes: {_nearest_valid(size, depth, padding)}")
        return size
    out = _trace_valid(size, depth)
    if out is None:
        raise InvalidInputError(
                   f"input size {size} is not valid for depth {depth} with VALID padding: a 2x2 max-pool would see an "
                   f"odd size or the output would be empty; nearest valid sizes: "
                   f"{_nearest_valid(size, depth, padding)}")
    return out


def valid_input_size(min_output: int, depth: int = 4, padding: str = "VALID") -> int:
    """Smallest valid input size whose output is at least ``min_output`` pixels (e.g. 388 -> 572)."""
    checks.one_of("padding", padding, PADDINGS)
    checks.integer("depth", depth, 1)
    checks.integer("min_output", min_output, 1)
    if padding == "SAME":
        m = 2 ** depth
        return -(-int(min_output) // m) * m
    b = _min_bottom(depth)
    while _decoder_out(b, depth) < min_output:
        b += 1
    return _valid_in_from_bottom(b, depth)


def border(depth: int = 4, padding: str = "VALID") -> int:
    """Context pixels lost on each side: (input - output) / 2; 92 for the paper network, 0 for SAME."""
    if checks.one_of("padding", padding, PADDINGS) == "SAME":
        return 0
    s = valid_input_size(1, depth)
    return (s - output_size(s, depth)) // 2


def unet_flops(size: int, features: int = 64, depth: int = 4, in_channels: int = 1, num_classes: int = 2,
               padding: str = "VALID") -> int:
    """Forward-pass FLOPs (2 per multiply-add, convolutions only) of the network on one ``size``-square tile."""
    flops = 0
    s = size
    c = in_channels

    def conv3(s, c_in, c_out):
        o = s - 2 if padding == "VALID" else s
        return o, 2 * o * o * 9 * c_in * c_out

    for level in range(depth):
        f = features * 2 ** level
        s, fl = conv3(s, c, f); flops += fl
        s, fl = conv3(s, f, f); flops += fl
        c = f
        s //= 2
    f = features * 2 ** depth
    s, fl = conv3(s, c, f); flops += fl
    s, fl = conv3(s, f, f); flops += fl
    c = f
    for level in reversed(range(depth)):
        f = features * 2 ** level
        flops += 2 * s * s * c * 4 * f
        s *= 2
        s, fl = conv3(s, 2 * f, f); flops += fl
        s, fl = conv3(s, f, f); flops += fl
        c = f
    flops += 2 * s * s * c * num_classes
    return flops
