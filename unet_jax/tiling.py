"""Overlap-tile inference (paper section 2, figure 2) and test-time augmentation.

An image of any size is segmented tile by tile, missing context beyond its border extrapolated by mirroring.
VALID tiles reproduce one pass over the mirror-padded image (up to float rounding); SAME tiles are blended with a
raised-cosine window (``tile_grid``, ``blend_window``). Entry points: ``predict_tiled`` (one image), ``predict_stack`` (a
stack) and ``make_batch_predictor`` (the jit-compiled per-batch function, pure jax.numpy; everything else here is
host-side numpy). Design notes: BENCHMARKS.md.
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from unet_jax import checks
from unet_jax.checks import InvalidInputError
from unet_jax.geometry import PADDINGS, border, output_size

PAD_MODES = ("symmetric", "reflect")

__all__ = ["TileGrid", "TileBatch", "tile_grid", "mirror_indices", "iter_tile_batches", "make_batch_predictor",
           "dihedral_transforms", "blend_window", "predict_tiled", "predict_stack", "PAD_MODES"]


# ----------------------------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TileGrid:
    """Tile layout for one image (host-side, plain integers).

    Attributes
    ----------
    image_shape : (int, int)
        (H, W) of the image.
    tile_size : int
        Input tile side T.
    out_size : int
        Output tile side O = ``output_size(T, depth, padding)``.
    step : int
        Distance between neighbouring tile origins (a multiple of ``2**depth``).
    pad_before : int
        Mirrored pixels before the image (top and left) in the padded image.
    offset : int
        Offset of a tile's output relative to its input origin, in padded coordinates: a tile at padded input
        origin ``y`` predicts image rows ``y + offset - pad_before ...`` (``border`` for VALID, 0 for SAME).
    origins_y, origins_x : tuple of int
        Tile origins in padded input coordinates, ``k * step``.
    padding : str
        'VALID' or 'SAME'.
    overlap : int
        Blending overlap in pixels (SAME), or the output overlap O - step (VALID).
    """
    image_shape: tuple
    tile_size: int
    out_size: int
    step: int
    pad_before: int
    offset: int
    origins_y: tuple
    origins_x: tuple
    padding: str
    overlap: int

    @property
    def padded_shape(self) -> tuple:
        """Shape (Hp, Wp) of the virtual mirror-padded image the tiles cover (never materialised)."""
        return ((len(self.origins_y) - 1) * self.step + self.tile_size,
                (len(self.origins_x) - 1) * self.step + self.tile_size)

    @property
    def num_tiles(self) -> int:
        return len(self.origins_y) * len(self.origins_x)

    def origins(self) -> np.ndarray:
        """All tile origins as an int64 array (num_tiles, 2) of (y, x) in padded coordinates, row-major."""
        yy, xx = np.meshgrid(np.asarray(self.origins_y, np.int64), np.asarray(self.origins_x, np.int64),
                             indexing="ij")
        return np.stack([yy.ravel(), xx.ravel()], axis=1)


def tile_grid(image_shape, tile_size: int, *, depth: int = 4, padding: str = "VALID",
              overlap: Optional[int] = None) -> TileGrid:
    """Plan the tiles covering an image (host-side).

    VALID (the paper's network): the image is mirror-padded by ``border(depth)`` pixels on the top and left, and
    tile origins lie on a grid of ``step`` = the largest multiple of ``2**depth`` that is at most O, so each tile
    computes exactly the pixels of one pass over the whole padded image (equal up to float rounding). SAME: tiles
    overlap by ``overlap`` pixels and the image is mirror-padded by ``overlap`` on the top and left, so every
    image pixel lies on the plateau (or peak) of some tile's ``blend_window``.

    Parameters
    ----------
    image_shape : (int, int)
        Image (H, W), both >= 1.
    tile_size : int
        Input tile side T; must be a valid size for ``depth`` and ``padding`` (``unet_jax.geometry.output_size``
        raises a ValueError naming the nearest valid sizes otherwise).
    depth : int
        Number of 2x2 max-pools of the network.
    padding : {'VALID', 'SAME'}
        The network's convolution padding.
    overlap : int or None
        SAME only: tile overlap in pixels, a multiple of ``2**depth`` in [0, T / 2]; None picks half a tile
        rounded down to a multiple of ``2**depth``. Must be None for VALID (the geometry fixes it).

    Returns
    -------
    TileGrid
    """
    checks.one_of("padding", padding, PADDINGS)
    if len(tuple(image_shape)) != 2:
        raise InvalidInputError(f"image_shape must be (H, W), got {image_shape!r}")
    h, w = (checks.integer("image_shape", s, 1) for s in image_shape)
    tile_size = checks.integer("tile_size", tile_size, 1)
    depth = checks.integer("depth", depth, 1)
    try:
        out = output_size(tile_size, depth, padding)
    except InvalidInputError as e:
        raise InvalidInputError(f"tile_size {tile_size} is not a valid input size: {e}") from None
    grid = 2 ** depth
    if padding == "VALID":
        if overlap is not None:
            raise InvalidInputError(f"overlap must be None for VALID padding (the tile geometry fixes it), got "
                                    f"{overlap!r}")
        step = (out // grid) * grid
        if step == 0:
            raise InvalidInputError(f"tile_size {tile_size} gives only {out} output pixels, fewer than the "
                                    f"{grid}-pixel pooling grid of depth {depth}; use a larger tile_size")
        pad_before = offset = border(depth, padding)
        overlap_px = out - step
    else:
        if overlap is None:
            overlap = (tile_size // 2 // grid) * grid
        overlap = checks.integer("overlap", overlap, 0)
        if overlap % grid or 2 * overlap > tile_size:
            raise InvalidInputError(f"overlap must be a multiple of {grid} in [0, {tile_size // 2}] for tile_size "
                                    f"{tile_size} and depth {depth}, got {overlap}")
        step = tile_size - overlap
        pad_before, offset, overlap_px = overlap, 0, overlap

    # Image pixels [0, covered) are served by tile 0: its whole output (VALID) or its window's plateau (SAME);
    # tile k serves k * step more. Use as many tiles as it takes to serve the whole image.
    covered = out if padding == "VALID" else tile_size - 2 * overlap_px

    def count(size):
        return 1 + max(0, -(-(size - covered) // step))

    ny, nx = count(h), count(w)
    return TileGrid(image_shape=(h, w), tile_size=tile_size, out_size=out, step=step, pad_before=pad_before,
                    offset=offset, origins_y=tuple(k * step for k in range(ny)),
                    origins_x=tuple(k * step for k in range(nx)), padding=padding, overlap=overlap_px)


def mirror_indices(start: int, length: int, size: int, mode: str = "symmetric") -> np.ndarray:
    """Source indices of ``length`` consecutive positions from ``start`` on an axis of ``size`` pixels, mirrored.

    Host-side. Position ``p`` (may be negative or >= size) maps to the pixel ``np.pad(x, ..., mode=mode)`` would
    put there: the mirrored extension is periodic with period ``2 * size`` ('symmetric') or ``2 * size - 2``
    ('reflect'; a single pixel is repeated).

    Returns
    -------
    int64 array (length,) with values in [0, size).
    """
    checks.one_of("pad_mode", mode, PAD_MODES)
    p = np.arange(start, start + length, dtype=np.int64)
    if mode == "symmetric":
        p = np.mod(p, 2 * size)
        return np.where(p >= size, 2 * size - 1 - p, p)
    if size == 1:
        return np.zeros(length, np.int64)
    period = 2 * size - 2
    p = np.mod(p, period)
    return np.where(p >= size, period - p, p)


def blend_window(tile_size: int, overlap: int) -> np.ndarray:
    """1-D raised-cosine (Tukey) blending window for SAME tiles (host-side).

    ``w[i] = sin^2(pi (i + 0.5) / (2 overlap))`` on the first ``overlap`` pixels, the mirror image on the last
    ``overlap``, 1 in between; strictly positive. Shifted copies ``tile_size - overlap`` apart sum to 1 where two
    tiles overlap (sin^2 + cos^2). ``overlap = tile_size / 2`` gives the (half-sample-shifted) Hann window.

    Returns
    -------
    float64 array (tile_size,)
    """
    tile_size = checks.integer("tile_size", tile_size, 1)
    overlap = checks.integer("overlap", overlap, 0)
    if 2 * overlap > tile_size:
        raise InvalidInputError(f"overlap must be at most tile_size / 2 = {tile_size / 2}, got {overlap}")
    w = np.ones(tile_size)
    if overlap:
        ramp = np.sin(np.pi * (np.arange(overlap) + 0.5) / (2 * overlap)) ** 2
        w[:overlap] = ramp
        w[tile_size - overlap:] = ramp[::-1]
    return w


def _window_sum(grid: TileGrid, axis: int) -> np.ndarray:
    """Sum of the blending windows of all tiles along one axis, at each image pixel (host-side, float64)."""
    size = grid.image_shape[axis]
    origins = grid.origins_y if axis == 0 else grid.origins_x
    win = blend_window(grid.tile_size, grid.overlap)
    total = np.zeros(size)
    for o in origins:
        a = o - grid.pad_before
        lo, hi = max(a, 0), min(a + grid.tile_size, size)
        total[lo:hi] += win[lo - a:hi - a]
    return total


# ----------------------------------------------------------------------------------------------------------------
# Tile batches
# ----------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TileBatch:
    """One batch of input tiles (host-side).

    Attributes
    ----------
    tiles : float32 array (batch_size, T, T, C)
        The first ``count`` entries are tiles; the rest (last batch only) are zero padding.
    origins : int64 array (count, 2)
        (y, x) origin of each real tile in padded input coordinates (see ``TileGrid``).
    count : int
        Number of real tiles in the batch.
    """
    tiles: np.ndarray
    origins: np.ndarray
    count: int


def _as_hwc(image, name="image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1 or (
            image.ndim == 3 and image.shape[2] < 1):
        raise InvalidInputError(f"{name} must be (H, W) or (H, W, C) with non-zero sizes, got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer)
            or image.dtype == bool):
        raise InvalidInputError(f"{name} must be a real numeric array, got dtype {image.dtype}")
    return image[..., None] if image.ndim == 2 else image


def iter_tile_batches(image, grid: TileGrid, batch_size: int = 4, pad_mode: str = "symmetric"
                      ) -> Iterator[TileBatch]:
    """Yield the input tiles of ``grid`` in row-major order, ``batch_size`` at a time (host-side, lazy).

    Each tile is gathered directly from ``image`` with mirrored indices (``mirror_indices``), so only one batch
    exists at a time (a new array per batch; the previous one is freed once the caller drops it). A tile inside
    the image is one slice copy; only along an axis where it crosses the border are rows or columns taken by index
    (4x less host time than a 2-D fancy index per tile: ``benchmarks/tiling_host.py``).

    Parameters
    ----------
    image : array (H, W) or (H, W, C), any real dtype
        Cast to float32 tile by tile (no rescaling).
    grid : TileGrid
        From ``tile_grid(image.shape[:2], ...)``.
    batch_size : int
        Tiles per batch; the last batch is zero-padded to this size.
    pad_mode : {'symmetric', 'reflect'}

    Yields
    ------
    TileBatch
        ``tiles`` float32 (batch_size, T, T, C).
    """
    image = _as_hwc(image)
    if not isinstance(grid, TileGrid):
        raise InvalidInputError(f"grid must be a TileGrid (from tile_grid), got {type(grid).__name__}")
    if tuple(image.shape[:2]) != tuple(grid.image_shape):
        raise InvalidInputError(f"image shape {image.shape[:2]} does not match grid.image_shape {grid.image_shape}")
    batch_size = checks.integer("batch_size", batch_size, 1)
    checks.one_of("pad_mode", pad_mode, PAD_MODES)
    h, w, c = image.shape
    t = grid.tile_size
    rows = {o: _span(mirror_indices(o - grid.pad_before, t, h, pad_mode)) for o in grid.origins_y}
    cols = {o: _span(mirror_indices(o - grid.pad_before, t, w, pad_mode)) for o in grid.origins_x}
    origins = grid.origins()
    for start in range(0, len(origins), batch_size):
        chunk = origins[start:start + batch_size]
        tiles = np.zeros((batch_size, t, t, c), np.float32)
        for i, (y, x) in enumerate(chunk):
            (rsl, ridx), (csl, cidx) = rows[int(y)], cols[int(x)]
            tile = image[rsl, csl]                        # a view of the bounding box
            if ridx is not None:
                tile = tile.take(ridx, axis=0)
            if cidx is not None:
                tile = tile.take(cidx, axis=1)
            tiles[i] = tile
        yield TileBatch(tiles=tiles, origins=chunk, count=len(chunk))


def _span(idx: np.ndarray):
    """Mirrored indices as (slice of their bounding range, indices into it or None where the slice is all)."""
    lo, hi = int(idx.min()), int(idx.max()) + 1
    if hi - lo == len(idx) and idx[0] == lo and bool((np.diff(idx) == 1).all()):
        return slice(lo, hi), None
    return slice(lo, hi), idx - lo


# ----------------------------------------------------------------------------------------------------------------
# The jit-compiled per-batch function
# ----------------------------------------------------------------------------------------------------------------

def dihedral_transforms():
    """The 8 symmetries of the square as (forward, inverse) pairs acting on the spatial axes (1, 2) of NHWC arrays.

    Pure jax.numpy (usable inside jit). Element k = (r, t): rotate by ``r * 90`` degrees after an optional
    transpose ``t``; ``inverse(forward(x)) == x``.
    """
    def make(r, t):
        def fwd(x):
            if t:
                x = jnp.swapaxes(x, 1, 2)
            return jnp.rot90(x, r, axes=(1, 2))

        def inv(y):
            y = jnp.rot90(y, -r, axes=(1, 2))
            return jnp.swapaxes(y, 1, 2) if t else y
        return fwd, inv
    return [make(r, t) for t in (False, True) for r in range(4)]


# Jitted per-batch functions, keyed weakly by the caller's apply_fn so repeated calls reuse compilations.
_PREDICTOR_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def make_batch_predictor(apply_fn: Callable, tta: bool = False, variables=None) -> Callable:
    """Jit-compiled ``(B, T, T, C) float32 -> (B, O, O, K) float32`` softmax probabilities.

    The returned function is pure jax.numpy and cached per ``(apply_fn, tta)`` (weakly, so it lives as long as
    ``apply_fn`` does); jax compiles it once per input shape. ``apply_fn`` may itself be jitted. Pass the same
    function object on every call (not a fresh lambda) to reuse compilations.

    With ``variables`` given, ``apply_fn(variables, x)`` is called and the variables are an argument of the
    compiled function rather than constants baked into it (use this for large networks: e.g.
    ``apply_fn=model.apply``); the returned function still takes only the batch.

    With ``tta=True`` the 8 dihedral transforms of the batch run through ``apply_fn`` one after another
    (``jax.lax.map``: the network is compiled once and device memory stays at one batch) and the probabilities,
    each mapped back by its inverse transform, are averaged.
    """
    if not callable(apply_fn):
        raise InvalidInputError(f"apply_fn must be callable, got {type(apply_fn).__name__}")
    key = (bool(tta), variables is not None)
    try:
        per_fn = _PREDICTOR_CACHE.setdefault(apply_fn, {})
        ref = weakref.ref(apply_fn)     # the cached function must not keep apply_fn (and its parameters) alive
    except TypeError:                   # not weak-referenceable or not hashable: no caching
        per_fn, ref = {}, (lambda f=apply_fn: f)
    if key not in per_fn:
        def probs(v, x):
            fn = ref()
            if fn is None:
                raise RuntimeError("apply_fn was garbage-collected; build a new predictor")
            logits = fn(x) if v is None else fn(v, x)
            return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

        if tta:
            transforms = dihedral_transforms()

            def predict_v(v, x):
                x = x.astype(jnp.float32)
                stacked = jnp.stack([fwd(x) for fwd, _ in transforms])            # (8, B, T, T, C)
                out = jax.lax.map(lambda t: probs(v, t), stacked)                  # (8, B, O, O, K)
                return sum(inv(out[k]) for k, (_, inv) in enumerate(transforms)) / len(transforms)
        else:
            def predict_v(v, x):
                return probs(v, x.astype(jnp.float32))

        if variables is None:
            per_fn[key] = jax.jit(lambda x: predict_v(None, x))
        else:
            per_fn[key] = jax.jit(predict_v)
    fn = per_fn[key]
    return fn if variables is None else (lambda x: fn(variables, x))


# ----------------------------------------------------------------------------------------------------------------
# Prediction
# ----------------------------------------------------------------------------------------------------------------

def _predict_into(predictor, image, grid, out, batch_size, pad_mode, num_classes, progress):
    """Run all tile batches of one image and write (VALID) or blend (SAME) them into ``out`` (host-side).

    ``out`` is None (allocated here once the number of classes is known) or a float32 (H, W, K) array.
    Returns ``out``.
    """
    h, w = grid.image_shape
    same = grid.padding == "SAME"
    o_size = grid.out_size
    if same:
        win = blend_window(grid.tile_size, grid.overlap).astype(np.float32)
        win2 = win[:, None] * win[None, :]

    def write(batch, probs):
        nonlocal out
        probs = np.asarray(probs)
        if probs.ndim != 4 or probs.shape[1:3] != (o_size, o_size) or probs.shape[0] != batch_size:
            raise InvalidInputError(f"apply_fn must map a ({batch_size}, {grid.tile_size}, {grid.tile_size}, C) batch "
                                    f"to ({batch_size}, {o_size}, {o_size}, K) logits, got shape {probs.shape}")
        k = probs.shape[3]
        if out is None:
            if num_classes is not None and k != num_classes:
                raise InvalidInputError(f"num_classes is {num_classes} but apply_fn returned {k} channels")
            out = np.zeros((h, w, k), np.float32)
        elif out.shape[2] != k:
            raise InvalidInputError(f"apply_fn returned {k} channels, expected {out.shape[2]}")
        for i in range(batch.count):
            y0 = int(batch.origins[i, 0]) + grid.offset - grid.pad_before   # image coords of output pixel 0
            x0 = int(batch.origins[i, 1]) + grid.offset - grid.pad_before
            ylo, yhi, xlo, xhi = max(y0, 0), min(y0 + o_size, h), max(x0, 0), min(x0 + o_size, w)
            if ylo >= yhi or xlo >= xhi:
                continue
            tile = probs[i, ylo - y0:yhi - y0, xlo - x0:xhi - x0]
            if same:
                out[ylo:yhi, xlo:xhi] += tile * win2[ylo - y0:yhi - y0, xlo - x0:xhi - x0, None]
            else:
                out[ylo:yhi, xlo:xhi] = tile

    batches = iter_tile_batches(image, grid, batch_size, pad_mode)
    if progress:
        bar = progress if callable(progress) else tqdm          # e.g. napari.utils.progress, a tqdm subclass
        batches = bar(batches, total=-(-grid.num_tiles // batch_size), desc="tiles", unit="batch")
    pending = None
    for batch in batches:
        result = predictor(batch.tiles)           # asynchronous dispatch
        if pending is not None:
            write(*pending)                       # write the previous batch while this one computes
        pending = (batch, result)
    write(*pending)
    if same:
        wy = _window_sum(grid, 0).astype(np.float32)
        wx = _window_sum(grid, 1).astype(np.float32)
        for r in range(h):                        # row by row: no (H, W) temporary
            out[r] /= (wy[r] * wx)[:, None]
    return out


def _check_common(batch_size, num_classes, pad_mode):
    batch_size = checks.integer("batch_size", batch_size, 1)
    if num_classes is not None:
        num_classes = checks.integer("num_classes", num_classes, 1)
    checks.one_of("pad_mode", pad_mode, PAD_MODES)
    return batch_size, num_classes


def predict_tiled(apply_fn: Callable, image, tile_size: int, *, depth: int = 4, padding: str = "VALID",
                  batch_size: int = 4, num_classes: Optional[int] = None, tta: bool = False, progress: bool = False,
                  overlap: Optional[int] = None, pad_mode: str = "symmetric",
                  variables=None) -> np.ndarray:
    """Softmax probabilities of a 2-D image of any size by overlap-tile inference (host-side driver).

    Parameters
    ----------
    apply_fn : callable
        Maps a float32 batch (B, T, T, C) to float32 logits (B, O, O, K), O = ``output_size(T, depth, padding)``,
        e.g. ``functools.partial(model.apply, variables)``. It is jit-compiled (with the softmax, and TTA if
        asked) once and cached per function object; it may already be jitted.
    image : array (H, W) or (H, W, C)
        Any size (smaller than a tile too); float32 in [0, 1] by convention, cast to float32 (not rescaled).
    tile_size : int
        Input tile side T, valid for ``depth`` and ``padding`` (e.g. 572 for the paper network).
    depth : int
        The network's number of poolings.
    padding : {'VALID', 'SAME'}
        The network's padding. VALID: exact equality with one pass over the mirror-padded image. SAME: tiles
        blended with a raised-cosine window whose sums are divided out (see ``tile_grid``).
    batch_size : int
        Tiles per apply_fn call; the last batch is padded so one compiled shape serves all batches.
    num_classes : int or None
        Expected K (checked against apply_fn's output); None takes it from the output.
    tta : bool
        Average the probabilities over the 8 symmetries of the square (dihedral group D4) of each tile, each
        mapped back by its inverse transform (the paper used 7 rotations).
    progress : bool or tqdm-like class
        Show a progress bar over batches: True a tqdm bar, a class (``napari.utils.progress``) one of its own.
    overlap : int or None
        SAME only: blending overlap in pixels (see ``tile_grid``).
    pad_mode : {'symmetric', 'reflect'}
        How the image is mirrored beyond its border, as ``np.pad``: 'symmetric' (default) repeats the edge pixel
        (``... c b a | a b c ...``), 'reflect' does not.
    variables : pytree or None
        If given, ``apply_fn(variables, x)`` is called with the variables as an argument of the compiled function
        (not constants baked into it): ``predict_tiled(model.apply, image, 572, variables=variables)``.

    Returns
    -------
    float32 array (H, W, K)
        Softmax probabilities; channel 1 is P(cell) for the paper's two classes. Besides the image and this
        output, at most two tile batches are held (tiles are gathered with mirrored indices; the padded image is
        never built).
    """
    image = _as_hwc(image)
    batch_size, num_classes = _check_common(batch_size, num_classes, pad_mode)
    grid = tile_grid(image.shape[:2], tile_size, depth=depth, padding=padding, overlap=overlap)
    predictor = make_batch_predictor(apply_fn, tta, variables)
    return _predict_into(predictor, image, grid, None, batch_size, pad_mode, num_classes, progress)


def predict_stack(apply_fn: Callable, stack, tile_size: int, *, depth: int = 4, padding: str = "VALID",
                  batch_size: int = 4, num_classes: Optional[int] = None, tta: bool = False,
                  progress: bool = False, overlap: Optional[int] = None, pad_mode: str = "symmetric",
                  variables=None) -> np.ndarray:
    """``predict_tiled`` slice by slice over a stack (host-side).

    Parameters
    ----------
    stack : array (Z, H, W) or (Z, H, W, C)
        A 3-D array is read as Z single-channel slices (unlike ``predict_tiled``, where 3-D means (H, W, C)).
    Other parameters as in ``predict_tiled``; ``progress`` shows a bar over slices.

    Returns
    -------
    float32 array (Z, H, W, K)
    """
    stack = np.asarray(stack)
    if stack.ndim not in (3, 4) or stack.shape[0] < 1:
        raise InvalidInputError(f"stack must be (Z, H, W) or (Z, H, W, C) with Z >= 1, got shape {stack.shape}")
    batch_size, num_classes = _check_common(batch_size, num_classes, pad_mode)
    first = _as_hwc(stack[0], "stack[0]")
    grid = tile_grid(first.shape[:2], tile_size, depth=depth, padding=padding, overlap=overlap)
    predictor = make_batch_predictor(apply_fn, tta, variables)
    out = None
    slices = range(stack.shape[0])
    if progress:
        slices = tqdm(slices, desc="slices", unit="slice")
    for z in slices:
        probs = _predict_into(predictor, stack[z], grid, None if out is None else out[z], batch_size, pad_mode,
                              num_classes, False)
        if out is None:
            out = np.zeros((stack.shape[0],) + probs.shape, np.float32)
            out[0] = probs
    return out
