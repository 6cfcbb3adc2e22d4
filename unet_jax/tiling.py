"""Overlap-tile inference (paper section 2, figure 2) and test-time augmentation, host-side around one jitted
batch function (``make_batch_predictor``). Missing context beyond the border is mirrored; VALID tiles equal one
pass over the padded image, SAME tiles are blended with a raised-cosine window. Design notes: BENCHMARKS.md."""
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
    """Tile layout of one image (plain integers): input tile T and output O, the ``step`` between origins,
    ``pad_before`` mirrored pixels top and left, the ``offset`` of a tile's output from its input origin (``border``
    for VALID, 0 for SAME), the origins in padded coordinates and the overlap (SAME: blending; VALID: O - step)."""
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
    """Plan the tiles covering an ``image_shape`` (H, W) for a valid ``tile_size`` (host-side).

    VALID: origins every ``step`` (the largest multiple of ``2**depth`` <= O) after ``border(depth)`` mirrored
    pixels, so tiles compute exactly one pass over the padded image. SAME: tiles overlap by ``overlap`` (a multiple of
    ``2**depth`` in [0, T/2]; None: half a tile) so every pixel lies on some tile's ``blend_window`` plateau."""
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
    """int64 (length,) source indices in [0, size) of ``length`` positions from ``start``, mirrored as
    ``np.pad(..., mode)`` would ('symmetric' period 2 size, 'reflect' 2 size - 2)."""
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
    """float64 (tile_size,) raised-cosine (Tukey) window for SAME tiles: sin^2 ramps over ``overlap`` pixels at
    both ends, 1 between, strictly positive; copies ``tile_size - overlap`` apart sum to 1 in the overlap."""
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
    """A batch of input tiles: ``tiles`` float32 (batch_size, T, T, C), the first ``count`` real (the rest
    zero padding), and their padded-coordinate ``origins`` (count, 2)."""
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
    """Yield the ``grid``'s tiles of ``image`` (H, W[, C], cast to float32) as ``TileBatch``es in row-major
    order (host-side, lazy). Tiles are gathered with mirrored indices, one batch at a time; a tile inside the image
    is one slice copy (benchmarks/tiling_host.py)."""
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
    """Jit-compiled ``(B, T, T, C) -> (B, O, O, K)`` softmax probabilities of ``apply_fn``, cached weakly
    per (apply_fn, tta): pass the same function object to reuse compilations. ``variables``: called as
    ``apply_fn(variables, x)`` with them as an argument, not baked-in constants. ``tta``: the 8 symmetries run one
    after another (``jax.lax.map``) and are averaged, each mapped back."""
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
    """float32 (H, W, K) softmax probabilities of an (H, W[, C]) image of any size by overlap-tile
    inference (host-side driver).

    ``apply_fn`` maps (B, T, T, C) float32 to (B, O, O, K) logits, O = ``output_size(tile_size, depth, padding)``
    (``variables``: called as ``apply_fn(variables, x)``); it is compiled once per function object. The last batch is
    padded so one shape serves all; ``num_classes`` is checked against the output; ``tta`` averages the 8 symmetries
    of each tile; ``progress``: True or a tqdm-like class; ``overlap`` and ``pad_mode`` as in ``tile_grid`` and
    ``mirror_indices``. At most two tile batches are held besides the image and the output."""
    image = _as_hwc(image)
    batch_size, num_classes = _check_common(batch_size, num_classes, pad_mode)
    grid = tile_grid(image.shape[:2], tile_size, depth=depth, padding=padding, overlap=overlap)
    predictor = make_batch_predictor(apply_fn, tta, variables)
    return _predict_into(predictor, image, grid, None, batch_size, pad_mode, num_classes, progress)


def predict_stack(apply_fn: Callable, stack, tile_size: int, *, depth: int = 4, padding: str = "VALID",
                  batch_size: int = 4, num_classes: Optional[int] = None, tta: bool = False,
                  progress: bool = False, overlap: Optional[int] = None, pad_mode: str = "symmetric",
                  variables=None) -> np.ndarray:
    """float32 (Z, H, W, K): ``predict_tiled`` slice by slice of a (Z, H, W) or (Z, H, W, C) stack (3-D
    means single-channel slices here); ``progress`` counts slices."""
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
