"""Data augmentation (paper section 3.1) on the accelerator, in pure jax.numpy: elastic deformations, shifts,
rotations, flips, zoom and gray values. The geometric parts compose into one coordinate map (``coordinate_map``)
so every array is resampled once (``warp``). Design notes: BENCHMARKS.md."""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from unet_jax import checks
from unet_jax.checks import InvalidInputError

__all__ = [
    "AugmentConfig", "read_config", "sample_displacement_grid", "displacement_field", "rotation_matrix",
    "dihedral_matrix", "coordinate_map", "warp", "elastic_warp", "random_coordinate_map", "gray_value_augment",
    "augment", "augment_batch",
]

# Coordinates reach hundreds of pixels: keep their matrix products in full float32 (no TF32/bf16 passes on GPUs).
_HIGHEST = jax.lax.Precision.HIGHEST

CONFIG_FIELDS = ("enabled", "elastic", "elastic_grid", "elastic_sigma", "rotate", "max_rotation", "flip", "shift",
                 "scale", "brightness", "contrast", "gamma", "noise")


# ----------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------

class AugmentConfig(NamedTuple):
    """Validated static augmentation settings (the fields of ``unet_jax.config.base_config()``'s ``augment`` section)."""
    enabled: bool
    elastic: bool
    elastic_grid: int
    elastic_sigma: float
    rotate: bool
    max_rotation: float
    flip: bool
    shift: float
    scale: float
    brightness: float
    contrast: float
    gamma: float
    noise: float

    @property
    def geometric(self) -> bool:
        """Whether any geometric part is active (otherwise no resampling happens at all)."""
        return ((self.elastic and self.elastic_sigma > 0) or (self.rotate and self.max_rotation > 0)
                or self.flip or self.shift > 0 or self.scale > 0)


def read_config(config) -> AugmentConfig:
    """The ``augment`` section (or a whole config holding one, or an ``AugmentConfig``) as a checked
    ``AugmentConfig`` of plain Python values (host-side, at trace time)."""
    if isinstance(config, AugmentConfig):
        return config
    if not isinstance(config, Mapping) and not hasattr(config, "keys"):
        raise InvalidInputError(f"config must be an ml_collections.ConfigDict or a mapping, got {type(config).__name__}")
    if "augment" in config.keys() and "enabled" not in config.keys():
        config = config["augment"]
    missing = [f for f in CONFIG_FIELDS if f not in config.keys()]
    if missing:
        raise InvalidInputError(f"config.augment is missing the fields {missing}; expected all of {list(CONFIG_FIELDS)}")
    c = {f: config[f] for f in CONFIG_FIELDS}
    return AugmentConfig(
        enabled=checks.boolean("config.augment.enabled", c["enabled"]),
        elastic=checks.boolean("config.augment.elastic", c["elastic"]),
        elastic_grid=checks.integer("config.augment.elastic_grid", c["elastic_grid"], 2),
        elastic_sigma=checks.real("config.augment.elastic_sigma", c["elastic_sigma"], 0.0),
        rotate=checks.boolean("config.augment.rotate", c["rotate"]),
        max_rotation=checks.real("config.augment.max_rotation", c["max_rotation"], 0.0, 180.0),
        flip=checks.boolean("config.augment.flip", c["flip"]),
        shift=checks.real("config.augment.shift", c["shift"], 0.0),
        scale=checks.real("config.augment.scale", c["scale"], 0.0, 1.0, high_open=True),
        brightness=checks.real("config.augment.brightness", c["brightness"], 0.0),
        contrast=checks.real("config.augment.contrast", c["contrast"], 0.0, 1.0),
        gamma=checks.real("config.augment.gamma", c["gamma"], 0.0),
        noise=checks.real("config.augment.noise", c["noise"], 0.0),
    )


# ----------------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------------

def _check_arrays(image, labels, weights, batched=False):
    """Check shapes/dtypes; returns the spatial shape (H, W)."""
    lead = 1 if batched else 0
    img_dims = (3 + lead, 4) if batched else (2, 3)
    if not hasattr(image, "shape") or image.ndim not in img_dims:
        want = "(B, H, W, C) or (B, H, W)" if batched else "(H, W) or (H, W, C)"
        raise InvalidInputError(f"image{'s' if batched else ''} must have shape {want}, got "
                                f"{getattr(image, 'shape', type(image).__name__)}")
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise InvalidInputError(f"image must be a floating array with values in [0, 1], got dtype {image.dtype}")
    shape = tuple(image.shape[:2 + lead])
    hw = shape[lead:]
    if min(hw) < 1:
        raise InvalidInputError(f"image must have a non-empty spatial shape, got {tuple(image.shape)}")
    for name, arr, kind in (("labels", labels, jnp.integer), ("weights", weights, jnp.floating)):
        if arr is None:
            continue
        if not hasattr(arr, "shape") or tuple(arr.shape) != shape:
            dims = "(B, H, W)" if batched else "(H, W)"
            raise InvalidInputError(f"{name} must have shape {shape} (the image's {dims}), got "
                                    f"{getattr(arr, 'shape', type(arr).__name__)}")
        if not jnp.issubdtype(arr.dtype, kind):
            want = "an integer" if kind is jnp.integer else "a floating"
            raise InvalidInputError(f"{name} must have {want} dtype, got {arr.dtype}")
    return tuple(int(s) for s in hw)


def _check_shape(shape):
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InvalidInputError(f"shape must be (H, W), got {shape!r}") from None
    if h < 1 or w < 1:
        raise InvalidInputError(f"shape must be positive (H, W), got {shape!r}")
    return h, w


# ----------------------------------------------------------------------------------------------------------------
# Elastic displacement field
# ----------------------------------------------------------------------------------------------------------------

def sample_displacement_grid(key: jax.Array, grid=3, sigma: float = 10.0) -> jax.Array:
    """float32 (2, gy, gx): random displacements on a coarse ``grid`` (int or pair, >= 2 points per axis),
    i.i.d. N(0, sigma^2) pixels; the paper's grid 3, sigma 10."""
    gy, gx = (grid, grid) if not isinstance(grid, (tuple, list)) else tuple(grid)
    gy, gx = checks.integer("grid", gy, 2), checks.integer("grid", gx, 2)
    sigma = checks.real("sigma", sigma, 0.0) if not isinstance(sigma, jax.Array) else sigma
    return sigma * jax.random.normal(key, (2, gy, gx), jnp.float32)


@functools.lru_cache(maxsize=64)
def _cubic_interpolation_matrix(n: int, g: int) -> np.ndarray:
    """Host-side: (n, g) float32 matrix B with ``B @ v`` the cubic-spline interpolation of ``v`` (g grid values,
    first and last on pixels 0 and n-1) at the n pixel centres. Interpolating (B at grid pixels is the identity)
    and a partition of unity (rows sum to 1)."""
    t = np.linspace(0.0, g - 1.0, n) if n > 1 else np.zeros(1)
    eye = np.eye(g)
    cols = [scipy.ndimage.map_coordinates(eye[j], [t], order=3, mode="mirror") for j in range(g)]
    return np.stack(cols, axis=1).astype(np.float32)


def displacement_field(grid_displacements: jax.Array, shape) -> jax.Array:
    """float32 (2, H, W) per-pixel displacements from the coarse (2, gy, gx) grid by cubic B-spline
    interpolation with mirror boundary (scipy's ``order=3, mode='mirror'``); grid point (a, b) sits at pixel
    (a (H-1)/(gy-1), b (W-1)/(gx-1))."""
    h, w = _check_shape(shape)
    d = grid_displacements
    if not hasattr(d, "shape") or d.ndim != 3 or d.shape[0] != 2 or min(d.shape[1:]) < 2:
        raise InvalidInputError(f"grid_displacements must have shape (2, gy, gx) with gy, gx >= 2, got "
                                f"{getattr(d, 'shape', type(d).__name__)}")
    by = jnp.asarray(_cubic_interpolation_matrix(h, int(d.shape[1])))
    bx = jnp.asarray(_cubic_interpolation_matrix(w, int(d.shape[2])))
    rows = jnp.einsum("kab,wb->kaw", d.astype(jnp.float32), bx, precision=_HIGHEST)     # (2, gy, W)
    return jnp.einsum("ha,kaw->khw", by, rows, precision=_HIGHEST)                       # (2, H, W)


# ----------------------------------------------------------------------------------------------------------------
# Affine part
# ----------------------------------------------------------------------------------------------------------------

def rotation_matrix(angle) -> jax.Array:
    """(2, 2) float32 sampling matrix (row, col coordinates) that rotates the image content by ``angle`` radians
    counter-clockwise as displayed (like ``np.rot90`` and ``skimage.transform.rotate``); ``angle`` may be traced."""
    a = jnp.asarray(angle, jnp.float32)
    cos, sin = jnp.cos(a), jnp.sin(a)
    return jnp.stack([jnp.stack([cos, sin]), jnp.stack([-sin, cos])])


_R90 = np.array([[0, 1], [-1, 0]], np.float32)
_FLIP_COLS = np.array([[1, 0], [0, -1]], np.float32)
# Element k of the symmetry group of the square: np.rot90 by k % 4, then np.fliplr if k >= 4.
_DIHEDRAL = np.stack([np.linalg.matrix_power(_R90, k % 4) @ (_FLIP_COLS if k >= 4 else np.eye(2, dtype=np.float32))
                      for k in range(8)]).astype(np.float32)


def dihedral_matrix(k) -> jax.Array:
    """(2, 2) float32 sampling matrix of the k-th symmetry of the square (k in 0..7, may be traced).

    Sampling with it (``coordinate_map(shape, matrix=dihedral_matrix(k))``) gives ``np.rot90(a, k % 4)``, followed
    by ``np.fliplr`` for ``k >= 4``. Odd ``k % 4`` (90 and 270 degrees) keeps the shape only for square images;
    k in {0, 2, 4, 6} (identity, 180 degrees, left-right and up-down flips) suit any shape.
    """
    return jnp.asarray(_DIHEDRAL)[jnp.asarray(k, jnp.int32) % 8]


def coordinate_map(shape, matrix: Optional[jax.Array] = None, offset: Optional[jax.Array] = None,
                   grid_displacements: Optional[jax.Array] = None) -> jax.Array:
    """float32 (2, H, W) sampling positions ``q(p) = c + matrix @ (p + d(p) - c) + offset`` for ``warp``.

    ``c`` is the image centre, ``d`` the elastic field of ``grid_displacements`` (None = 0; ``matrix`` None = identity,
    ``offset`` None = 0). The map is one small matrix product per coordinate of cubic row and column bases, so the
    per-pixel field is never formed and the 8 symmetries give exact integer positions."""
    h, w = _check_shape(shape)
    if matrix is not None and tuple(jnp.shape(matrix)) != (2, 2):
        raise InvalidInputError(f"matrix must have shape (2, 2), got {tuple(jnp.shape(matrix))}")
    if offset is not None and tuple(jnp.shape(offset)) != (2,):
        raise InvalidInputError(f"offset must have shape (2,), got {tuple(jnp.shape(offset))}")
    d = grid_displacements
    if d is not None and (not hasattr(d, "shape") or d.ndim != 3 or d.shape[0] != 2 or min(d.shape[1:]) < 2):
        raise InvalidInputError(f"grid_displacements must have shape (2, gy, gx) with gy, gx >= 2, got "
                                f"{getattr(d, 'shape', type(d).__name__)}")
    return jnp.stack(_coordinate_planes((h, w), matrix, offset, grid_displacements))


def _coordinate_planes(shape, matrix=None, offset=None, grid_displacements=None):
    """``coordinate_map`` as two (H, W) arrays (rows, cols), each the output of its own matrix product.

    Kept apart, each plane is one row-major product result that the resampling reads directly (a stacked (2, H, W)
    array costs an extra copy; one batched einsum lets XLA pick a transposed layout, read with a stride).
    """
    h, w = shape
    m = jnp.eye(2, dtype=jnp.float32) if matrix is None else jnp.asarray(matrix, jnp.float32)
    t = jnp.zeros(2, jnp.float32) if offset is None else jnp.asarray(offset, jnp.float32)
    gy = gx = 0
    rows = [np.arange(h, dtype=np.float32)[:, None], np.ones((h, 1), np.float32)]
    cols = [np.arange(w, dtype=np.float32)[:, None], np.ones((w, 1), np.float32)]
    if grid_displacements is not None:
        d = grid_displacements
        gy, gx = int(d.shape[1]), int(d.shape[2])
        rows.insert(0, _cubic_interpolation_matrix(h, gy))
        cols.insert(0, _cubic_interpolation_matrix(w, gx))
    by = jnp.asarray(np.concatenate(rows, axis=1))      # (H, gy + 2): [B_y, i, 1]
    bx = jnp.asarray(np.concatenate(cols, axis=1))      # (W, gx + 2): [B_x, j, 1]
    c = jnp.array([(h - 1) / 2.0, (w - 1) / 2.0], jnp.float32)
    const = c + t - jnp.dot(m, c, precision=_HIGHEST)
    zeros = jnp.zeros(2, jnp.float32)
    # C_k (2, gy+2, gx+2): q_k = sum_l m_kl d_l + m_k0 * i * 1 + m_k1 * 1 * j + const_k * 1 * 1.
    tail = jnp.stack([jnp.stack([zeros, m[:, 0]], -1), jnp.stack([m[:, 1], const], -1)], 1)   # (2, 2, 2)
    if grid_displacements is None:
        coef = tail
    else:
        elastic = jnp.einsum("kl,lab->kab", m, d.astype(jnp.float32), precision=_HIGHEST)
        coef = jnp.zeros((2, gy + 2, gx + 2), jnp.float32).at[:, :gy, :gx].set(elastic).at[:, gy:, gx:].set(tail)
    partial = jnp.einsum("kab,wb->kaw", coef, bx, precision=_HIGHEST)    # (2, gy + 2, W)
    return tuple(jnp.dot(by, partial[k], precision=_HIGHEST) for k in range(2))   # 2 x (H, W)


# ----------------------------------------------------------------------------------------------------------------
# Resampling
# ----------------------------------------------------------------------------------------------------------------

def _reflect(x: jax.Array, n: int) -> jax.Array:
    """Reflect continuous positions into [0, n-1] ('mirror': whole-sample symmetric about 0 and n-1)."""
    if n == 1:
        return jnp.zeros_like(x)
    period = 2.0 * (n - 1)
    x = jnp.abs(x)
    x = x - period * jnp.floor(x * (1.0 / period))   # x mod period without fmod (slow on CPUs); exact in range
    return jnp.where(x > n - 1, period - x, x)


def warp(image: jax.Array, labels: Optional[jax.Array], weights: Optional[jax.Array], coords: jax.Array):
    """Resample image and weights (linear) and labels (nearest: no new values) once at ``coords`` (2, H', W'),
    mirrored outside the image; equals ``jax.scipy.ndimage.map_coordinates(..., mode='mirror')``. None stays None."""
    _check_arrays(image, labels, weights)
    if not hasattr(coords, "shape") or coords.ndim != 3 or coords.shape[0] != 2:
        raise InvalidInputError(f"coords must have shape (2, H, W), got "
                                f"{getattr(coords, 'shape', type(coords).__name__)}")
    return _resample_one(image, labels, weights, coords[0], coords[1])


def _resample_one(image, labels, weights, rows, cols):
    """``_resample`` for one example: rows / cols (H', W')."""
    out = _resample(image[None], None if labels is None else labels[None],
                    None if weights is None else weights[None], rows[None], cols[None])
    return tuple(None if a is None else a[0] for a in out)


def _resample(images, labels, weights, rows, cols):
    """``warp`` for a batch: images (B, H, W[, C]), labels / weights (B, H, W) or None, positions rows / cols
    (B, H', W').

    Positions are reflected once and shared by all arrays. The batch is folded into the flat gather indices: plain
    gathers, not vmapped (batched) ones, which XLA ran about twice as slowly on CPUs.
    """
    b, h, w = images.shape[:3]
    out_hw = tuple(rows.shape[1:])
    y = _reflect(rows.astype(jnp.float32), h)        # (B, H', W')
    x = _reflect(cols.astype(jnp.float32), w)
    offset = (jnp.arange(b, dtype=jnp.int32) * (h * w)).reshape(b, 1, 1)
    nearest = (offset + jnp.clip(jnp.round(y), 0, h - 1).astype(jnp.int32) * w
               + jnp.clip(jnp.round(x), 0, w - 1).astype(jnp.int32))
    y0 = jnp.clip(jnp.floor(y), 0, max(h - 2, 0))
    x0 = jnp.clip(jnp.floor(x), 0, max(w - 2, 0))
    fy, fx = y - y0, x - x0
    base = offset + y0.astype(jnp.int32) * w + x0.astype(jnp.int32)
    dy, dx = (w if h > 1 else 0), (1 if w > 1 else 0)
    out_labels = labels.reshape(-1)[nearest] if labels is not None else None

    def linear(a):
        chans = a.shape[3:]
        flat = a.reshape((b * h * w,) + chans).astype(jnp.float32)
        ey = fy.reshape((b,) + out_hw + (1,) * len(chans))
        ex = fx.reshape((b,) + out_hw + (1,) * len(chans))
        top = flat[base] * (1 - ex) + flat[base + dx] * ex
        bottom = flat[base + dy] * (1 - ex) + flat[base + dy + dx] * ex
        return (top * (1 - ey) + bottom * ey).astype(a.dtype)

    if images.ndim == 4 and images.shape[3] == 1:   # one channel: gather scalars from the plane
        out_images = linear(images.reshape(images.shape[:3])).reshape(images.shape)
    else:
        out_images = linear(images)
    out_weights = linear(weights) if weights is not None else None
    return out_images, out_labels, out_weights


def elastic_warp(key: jax.Array, image: jax.Array, labels: Optional[jax.Array], weights: Optional[jax.Array], *,
                 grid=3, sigma: float = 10.0):
    """The paper's random elastic deformation: N(0, sigma^2) displacements on a ``grid`` of points per axis
    (static), bicubic upsampling and one resampling (``warp``); ``sigma == 0`` returns the inputs."""
    hw = _check_arrays(image, labels, weights)
    sigma = checks.real("sigma", sigma, 0.0)
    for g in (grid if isinstance(grid, (tuple, list)) else (grid,)):
        checks.integer("grid", g, 2)
    if sigma == 0:
        return image, labels, weights
    rows, cols = _coordinate_planes(hw, grid_displacements=sample_displacement_grid(key, grid, sigma))
    return _resample_one(image, labels, weights, rows, cols)


def random_coordinate_map(key: jax.Array, shape, config) -> Optional[jax.Array]:
    """One random ``coordinate_map`` composing the enabled geometric parts of the ``augment`` section
    (elastic grid, rotation in [-max_rotation, max_rotation] degrees, one of the 8 symmetries (4 for non-square
    images), shift, zoom in [1 - scale, 1 + scale]); None when none is active."""
    planes = _random_planes(key, _check_shape(shape), read_config(config))
    return None if planes is None else jnp.stack(planes)


def _random_planes(key, shape, cfg: AugmentConfig):
    """``random_coordinate_map`` as (rows, cols) planes (``_coordinate_planes``), or None."""
    h, w = shape
    if not cfg.geometric:
        return None
    k_el, k_rot, k_flip, k_shift, k_scale = jax.random.split(key, 5)
    grid_displacements = None
    if cfg.elastic and cfg.elastic_sigma > 0:
        grid_displacements = sample_displacement_grid(k_el, cfg.elastic_grid, cfg.elastic_sigma)
    matrix = None
    if cfg.flip:
        if h == w:
            k = jax.random.randint(k_flip, (), 0, 8)
        else:
            k = 2 * jax.random.randint(k_flip, (), 0, 4)
        matrix = dihedral_matrix(k)
    if cfg.rotate and cfg.max_rotation > 0:
        limit = math.radians(cfg.max_rotation)
        rot = rotation_matrix(jax.random.uniform(k_rot, (), jnp.float32, -limit, limit))
        matrix = rot if matrix is None else jnp.dot(rot, matrix, precision=_HIGHEST)
    if cfg.scale > 0:
        zoom = jax.random.uniform(k_scale, (), jnp.float32, 1.0 - cfg.scale, 1.0 + cfg.scale)
        matrix = (jnp.eye(2, dtype=jnp.float32) if matrix is None else matrix) / zoom
    offset = None
    if cfg.shift > 0:
        offset = jax.random.uniform(k_shift, (2,), jnp.float32, -cfg.shift, cfg.shift)
    return _coordinate_planes((h, w), matrix, offset, grid_displacements)


# ----------------------------------------------------------------------------------------------------------------
# Gray values
# ----------------------------------------------------------------------------------------------------------------

def gray_value_augment(key: jax.Array, image: jax.Array, *, brightness: float = 0.0, contrast: float = 0.0,
                       gamma: float = 0.0, noise: float = 0.0) -> jax.Array:
    """Random gamma ``x ** exp(u)``, contrast about the image mean, brightness offset and Gaussian noise,
    each uniform in +-its setting (0 = off, static), on an image in [0, 1], clipped back to [0, 1]."""
    if not hasattr(image, "dtype") or not jnp.issubdtype(image.dtype, jnp.floating):
        raise InvalidInputError(f"image must be a floating array with values in [0, 1], got "
                                f"{getattr(image, 'dtype', type(image).__name__)}")
    brightness = checks.real("brightness", brightness, 0.0)
    contrast = checks.real("contrast", contrast, 0.0, 1.0)
    gamma = checks.real("gamma", gamma, 0.0)
    noise = checks.real("noise", noise, 0.0)
    return _gray_values(key, image, brightness, contrast, gamma, noise)


def _gray_values(key, image, brightness, contrast, gamma, noise):
    """``gray_value_augment`` of checked settings."""
    if not (brightness or contrast or gamma or noise):
        return image
    k_gamma, k_contrast, k_bright, k_noise = jax.random.split(key, 4)
    x = jnp.clip(image.astype(jnp.float32), 0.0, 1.0)
    if gamma:
        x = x ** jnp.exp(jax.random.uniform(k_gamma, (), jnp.float32, -gamma, gamma))
    if contrast:
        s = jax.random.uniform(k_contrast, (), jnp.float32, 1.0 - contrast, 1.0 + contrast)
        mean = x.mean()
        x = (x - mean) * s + mean
    if brightness:
        x = x + jax.random.uniform(k_bright, (), jnp.float32, -brightness, brightness)
    if noise:
        x = x + noise * jax.random.normal(k_noise, x.shape, jnp.float32)
    return jnp.clip(x, 0.0, 1.0).astype(image.dtype)


# ----------------------------------------------------------------------------------------------------------------
# The whole chain
# ----------------------------------------------------------------------------------------------------------------

def augment(key: jax.Array, image: jax.Array, labels: Optional[jax.Array], weights: Optional[jax.Array], config):
    """Augment one example (jit- and vmap-able): every geometric part in one resampling, then gray values.

    ``labels`` (int, nearest) and ``weights`` (float, linear) may be None. ``config``: the ``augment`` section or an
    ``AugmentConfig``, read at trace time so a part switched off costs nothing; ``enabled=False`` returns the inputs."""
    cfg = read_config(config)
    hw = _check_arrays(image, labels, weights)
    if not cfg.enabled:
        return image, labels, weights
    k_geo, k_gray = jax.random.split(key)
    planes = _random_planes(k_geo, hw, cfg)
    if planes is not None:
        image, labels, weights = _resample_one(image, labels, weights, *planes)
    image = _gray_values(k_gray, image, cfg.brightness, cfg.contrast, cfg.gamma, cfg.noise)
    return image, labels, weights


def augment_batch(key: jax.Array, images: jax.Array, labels: Optional[jax.Array], weights: Optional[jax.Array],
                  config):
    """``augment`` of each example of a (B, H, W[, C]) batch with key ``jax.random.split(key, B)[n]``; one
    gather per array for the whole batch."""
    cfg = read_config(config)
    _check_arrays(images, labels, weights, batched=True)
    if not cfg.enabled:
        return images, labels, weights
    b, h, w = images.shape[:3]
    # the same per-example keys as ``augment(keys[n], ...)``, so both give the same result
    pairs = jax.vmap(jax.random.split)(jax.random.split(key, b))         # (B, 2) keys
    k_geo, k_gray = pairs[:, 0], pairs[:, 1]
    if cfg.geometric:
        rows, cols = jax.vmap(lambda k: _random_planes(k, (h, w), cfg))(k_geo)
        images, labels, weights = _resample(images, labels, weights, rows, cols)
    gray = functools.partial(_gray_values, brightness=cfg.brightness, contrast=cfg.contrast, gamma=cfg.gamma,
                             noise=cfg.noise)
    images = jax.vmap(gray)(k_gray, images)
    return images, labels, weights
