"""Configuration: the schema every experiment starts from, the built-in default experiment, and its checks.

Experiments are Python files (experiments/*.py) whose ``get_config()`` starts from ``base_config()`` and changes
what the experiment is about. ``base_config()`` holds the paper's settings; ``synthetic_config()`` is the
built-in default (``unet-jax train`` with no --config), the same as experiments/synthetic.py.
"""
from __future__ import annotations

import ast
import contextlib
import difflib
import importlib.util
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

import ml_collections

from unet_jax import checks
from unet_jax.augment import read_config as read_augment_config
from unet_jax.checks import InvalidInputError
from unet_jax.data import DATASETS
from unet_jax.data.common import TARGETS, normalize_class_weights
from unet_jax.data.ctc import DATASETS as CTC_DATASETS
from unet_jax.data.masks import MASK_TYPES
from unet_jax.geometry import PADDINGS, output_size
from unet_jax.instances import INSTANCE_METHODS
from unet_jax.model import NORMS, UPSAMPLES
from unet_jax.weights import DISTANCE_BINS

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
DTYPES = ("float32", "bfloat16")            # compute dtypes; parameters stay float32
BEST_MODES = ("min", "max")
ISBI_METRICS = ("pixel_error", "rand_error", "warping_error", "vrand_thinned", "vinfo_thinned")
BEST_METRICS = ("iou", "loss", "pixel_mismatch") + ISBI_METRICS


def base_config() -> ml_collections.ConfigDict:
    """The full schema with the paper's defaults (features 64, depth 4, VALID, 572 tiles, SGD momentum 0.99)."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    # unet_jax.model.UNet fields; dtype is the compute dtype ('float32' or 'bfloat16'), params stay float32.
    c.model = ml_collections.ConfigDict(dict(
        num_classes=2, features=64, depth=4, padding="VALID", dropout_rate=0.5, norm="",
        upsample="transpose", dtype="float32"))

    # unet_jax.data: which TFDS builder and where its files are.
    c.data = ml_collections.ConfigDict(dict(
        name="synthetic_cells",     # 'synthetic_cells' | 'isbi2012' | 'ctc' | 'folder'
        builder_config="",          # ctc: 'phc_c2dh_u373' or 'dic_c2dh_hela'
        root="",                    # manual directory with the downloaded files (isbi2012, ctc, folder)
        data_dir="",                # where TFDS writes prepared data ('' = ~/.cache/unet_jax/tfds)
        validation_slices=5,        # isbi2012: the last N of the 30 training slices are validation
        validation_fraction=0.2,    # ctc / folder: fraction of examples held out for validation
        mask_type="auto",           # folder: 'auto' | 'binary' | 'instance' (unet_jax.data.masks.mask_to_instances)
        target="foreground",        # two classes (the paper's); 'contours': background, interior, contour
                                    # (unet_jax.weights.contour_classes; needs model.num_classes=3); 'distance':
                                    # background and 4 classes of the normalised distance to the object's edge
                                    # (unet_jax.weights.distance_classes; model.num_classes=5); 'auto' (folder):
                                    # 'distance' when the masks hold touching objects, else 'foreground'
                                    # (decided by train, which records the choice in config.json)
        num_train=24, num_validation=6, image_size=256, seed=0))   # synthetic_cells: size and generator seed

    # unet_jax.weights.unet_weight_map (precomputed per example when the data set is prepared); separation_border:
    # two-class targets are background where annotated objects touch (unet_jax.weights.separation_border).
    c.weights = ml_collections.ConfigDict(dict(w0=10.0, sigma=5.0, class_weights="balanced",
                                               separation_border=True))

    # unet_jax.losses, in the train step: the weighted cross-entropy (the paper's energy) plus dice_weight times
    # the soft Dice loss of the foreground (unet_jax.losses.soft_dice_loss; 0 = the paper's loss alone).
    c.loss = ml_collections.ConfigDict(dict(dice_weight=0.0))

    # unet_jax.augment.augment, inside the train step.
    c.augment = ml_collections.ConfigDict(dict(
        enabled=True,
        elastic=True, elastic_grid=3, elastic_sigma=10.0,
        rotate=True, max_rotation=180.0,      # degrees, uniform in [-max, max]
        flip=True,                            # random flips and 90-degree rotations (8 symmetries)
        shift=0.0,                            # pixels, uniform in [-shift, shift]
        scale=0.0,                            # relative, uniform in [1 - scale, 1 + scale]
        brightness=0.1, contrast=0.1, gamma=0.1, noise=0.02))

    # unet_jax.step.create_optimizer. Paper: SGD, momentum 0.99, one large tile per step; it gives no learning
    # rate. 0.001 on the weighted-mean loss: at 0.01 the paper network on ISBI 2012 collapsed to one class
    # everywhere by step 250-400, on a CPU and an H200 alike; at 0.003 and 0.001 it learned (BENCHMARKS.md,
    # "Paper recipe: learning rate"). Schedules and warmup_steps count optimizer updates (train steps //
    # grad_accum_steps); weight_decay applies to kernels only (coupled L2 for sgd/adam, decoupled for adamw);
    # grad_clip_norm 0 = no clipping; grad_accum_steps > 1 averages that many steps' gradients per update
    # (optax.MultiSteps).
    c.optimizer = ml_collections.ConfigDict(dict(
        name="sgd",                  # 'sgd' | 'adam' | 'adamw'
        learning_rate=0.001, momentum=0.99, nesterov=False, weight_decay=0.0,
        schedule="constant",         # 'constant' | 'cosine' | 'warmup_cosine'
        warmup_steps=0, grad_accum_steps=1, grad_clip_norm=0.0))

    # unet_jax.train.train_and_evaluate. eval_every / checkpoint_every 0 = only at the end (the last step is always
    # validated and saved; every validation step is saved too). keep_checkpoints latest steps are kept plus the
    # best by the validation metric best_metric, best_mode 'max' or 'min' ('' = latest only): 'iou' (foreground IoU,
    # the default: an all-background or all-foreground prediction cannot win it), 'loss', 'pixel_mismatch', or
    # one of the ISBI measures 'pixel_error', 'rand_error', 'warping_error', 'vrand_thinned', 'vinfo_thinned'.
    # distributed=True calls jax.distributed.initialize; coordinator_address ('host:port' of process 0),
    # num_processes and process_id may stay ''/0/-1 where JAX detects the cluster (SLURM, Open MPI, TPU, ...).
    # max_rollbacks: how often a diverging loss (a spike or NaN, unet_jax.guard) may send the run back to its last
    # healthy state with half the learning rate before it stops (0 = stop at once).
    # time_limit > 0 (seconds since training started, data loading and compilation included) ends the run early:
    # the step where it passes is validated and checkpointed like a last step; the same command resumes it.
    # Resuming a workdir with a config that differs in anything but run-control settings (workdir.RUN_CONTROL_KEYS:
    # num_steps, time_limit, log_every, the cluster fields, data.data_dir, eval.batch_size) is refused unless
    # allow_config_change; each start is recorded in WORKDIR/config_history.jsonl. A larger num_steps continues a
    # finished run, its learning-rate schedule recomputed over the new total.
    c.train = ml_collections.ConfigDict(dict(
        tile_size=572,               # input tile; the output (and the labels used) is output_size(tile_size)
        batch_size=1,                # global batch, split over all devices (of all processes)
        foreground_fraction=0.0,     # share of tiles centred on a foreground pixel (the rest uniform; paper 0)
        num_steps=10000, log_every=50, eval_every=1000, checkpoint_every=1000, keep_checkpoints=3,
        best_metric="iou", best_mode="max", time_limit=0.0, max_rollbacks=3, allow_config_change=False,
        distributed=False, coordinator_address="", num_processes=0, process_id=-1))

    # Overlap-tile inference for validation, evaluate and predict. Objects (predict's label images, evaluate's
    # object measures): 'watershed' splits touching objects (unet_jax.instances; watershed_h: the depth in pixels a
    # peak of the distance transform, smoothed by watershed_smooth pixels, needs to seed an object), 'components'
    # keeps connected components, 'contours' grows the predicted interiors of a data.target='contours' model,
    # 'centres' the predicted object centres of a data.target='distance' model; objects smaller than
    # min_object_size pixels or than min_object_fraction of object_area (specks and fragments) are dropped.
    # object_area: the median area in pixels of the annotated training objects, learned by train (0 = unknown).
    c.eval = ml_collections.ConfigDict(dict(tile_size=572, batch_size=4, tta=False, threshold=0.5,
                                            instances="watershed", watershed_h=2.0, watershed_smooth=2.0,
                                            min_object_size=0, min_object_fraction=0.2, object_area=0.0))
    return c


def ctc_config(builder_config: str) -> ml_collections.ConfigDict:
    """A cell tracking data set ('phc_c2dh_u373' or 'dic_c2dh_hela') with the paper's settings: the base schema
    with the ``ctc`` builder, 20000 steps and the checkpoint kept by the highest validation IoU (the paper's
    measure on these data sets)."""
    c = base_config()
    c.data.name = "ctc"
    c.data.builder_config = builder_config
    c.train.num_steps = 20000
    c.train.best_metric = "iou"
    c.train.best_mode = "max"
    return c


def synthetic_config() -> ml_collections.ConfigDict:
    """The built-in default: a small U-Net on the procedural synthetic cells, minutes on 2 CPU cores."""
    c = base_config()
    c.model.features = 8
    c.model.depth = 3
    c.model.dropout_rate = 0.1
    c.data.name = "synthetic_cells"
    c.data.num_train = 16
    c.data.num_validation = 4
    c.data.image_size = 192
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.momentum = 0.9
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 20
    c.train.tile_size = 124          # -> 36x36 output at depth 3
    c.train.batch_size = 4
    c.train.num_steps = 600
    c.train.log_every = 25
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
    c.eval.tile_size = 188           # -> 100x100 output
    c.eval.batch_size = 4
    return c


def fill_eval_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Add every field a run saved before it existed (a restored ``config.json``), with its ``base_config`` value,
    so that fields are always read as attributes."""
    base = base_config()
    for section in base.keys():
        if not isinstance(base[section], ml_collections.ConfigDict) or section not in config:
            continue
        for key in base[section].keys():
            if key not in config[section]:
                with config[section].unlocked():
                    config[section][key] = base[section][key]
    return config


def section(name: str, values=None) -> ml_collections.ConfigDict:
    """``base_config()``'s section ``name`` ('data' or 'weights') with ``values`` (a mapping of some of its fields,
    or None) set and checked: for library callers of ``unet_jax.data.load_split`` that pass a plain dict."""
    base = base_config()[name]
    values = dict(values or {})
    unknown = sorted(set(values) - set(base.keys()))
    if unknown:
        raise InvalidInputError(f"unknown {name} field(s) {unknown}; known: {sorted(base.keys())}")
    s = base
    for key, value in values.items():
        try:
            s[key] = value                # typed like the field (an int w0 becomes 10.0)
        except TypeError:
            with s.ignore_type():         # e.g. class_weights (1, 3); the checks below judge it
                s[key] = value
    {"data": validate_data, "weights": validate_weights}[name](s)
    return s


def validate_eval(config: ml_collections.ConfigDict) -> None:
    """The eval section of ``validate``; ``evaluate`` and ``predict`` check it again after their overrides."""
    e, m = config.eval, config.model
    _int("eval.batch_size", e.batch_size)
    _real("eval.threshold", e.threshold, 0.0, 1.0, low_open=True, high_open=True)
    _bool("eval.tta", e.tta)
    _one_of("eval.instances", e.instances, INSTANCE_METHODS)
    for method, target in (("contours", "contours"), ("centres", "distance")):
        if e.instances == method and config.data.target not in (target, "auto"):
            raise InvalidInputError(f"config.eval.instances={method!r} needs a model trained with data.target="
                                    f"{target!r}; use 'watershed' or 'components' for this model")
    _real("eval.watershed_h", e.watershed_h, low_open=True)
    _real("eval.watershed_smooth", e.watershed_smooth)
    _int("eval.min_object_size", e.min_object_size, 0)
    _real("eval.min_object_fraction", e.min_object_fraction, 0.0, 1.0, high_open=True)
    _real("eval.object_area", e.object_area)
    _tile_size("eval.tile_size", e.tile_size, m)


def _one_of(name, value, allowed):
    return checks.one_of(f"config.{name}", value, allowed)


def _int(name, value, minimum=1, maximum=None):
    return checks.integer(f"config.{name}", value, minimum, maximum)


def _real(name, value, low=0.0, high=None, **open_ends):
    return checks.real(f"config.{name}", value, low, high, **open_ends)


def _bool(name, value):
    return checks.boolean(f"config.{name}", value)


def _tile_size(name, tile_size, model):
    try:
        output_size(tile_size, model.depth, model.padding)
    except ValueError as err:
        raise InvalidInputError(f"config.{name}: {err}") from None


def validate_data(d: ml_collections.ConfigDict) -> None:
    """The data section of ``validate`` (without the checks against the model)."""
    _one_of("data.name", d.name, DATASETS)
    if d.name in ("isbi2012", "ctc", "folder") and not d.root:
        raise InvalidInputError(f"config.data.root must name the directory with the downloaded {d.name} files "
                                f"(e.g. --config.data.root=/path/to/{d.name})")
    if d.name == "ctc":
        _one_of("data.builder_config", d.builder_config, sorted(CTC_DATASETS))
    elif d.builder_config not in ("", "default"):
        raise InvalidInputError(f"config.data.builder_config must be '' for {d.name}, got {d.builder_config!r}")
    _real("data.validation_fraction", d.validation_fraction, 0.0, 1.0, high_open=True)
    _int("data.validation_slices", d.validation_slices, 0)
    _one_of("data.mask_type", d.mask_type, MASK_TYPES)
    _one_of("data.target", d.target, TARGETS + ("auto",))
    _int("data.num_train", d.num_train, 1)
    _int("data.num_validation", d.num_validation, 0)
    _int("data.image_size", d.image_size, 16)
    _int("data.seed", d.seed, 0)


def validate_weights(w: ml_collections.ConfigDict) -> None:
    """The weights section of ``validate``."""
    _real("weights.w0", w.w0)
    _real("weights.sigma", w.sigma, low_open=True)
    try:
        normalize_class_weights(w.class_weights)
    except InvalidInputError as err:
        raise InvalidInputError(f"config.weights.{err}") from None
    _bool("weights.separation_border", w.separation_border)


def validate(config) -> None:
    """Check every section of an experiment config before any work starts (host-side): the one check of config
    values; everything downstream reads them as typed attributes. Raises InvalidInputError naming the first bad
    field (``config.SECTION.KEY``), what it holds and what is expected."""
    if not isinstance(config, ml_collections.ConfigDict):
        raise InvalidInputError(f"config must be an ml_collections.ConfigDict (experiments/*.py get_config()), got "
                                f"{type(config).__name__}")
    fill_eval_defaults(config)   # a config written before a field existed
    m, d, t, o = config.model, config.data, config.train, config.optimizer
    _one_of("model.padding", m.padding, PADDINGS)
    _one_of("model.norm", m.norm or None, NORMS)
    _one_of("model.upsample", m.upsample, UPSAMPLES)
    _one_of("model.dtype", m.dtype, DTYPES)
    for key in ("features", "depth", "num_classes"):
        _int(f"model.{key}", m[key])
    _real("model.dropout_rate", m.dropout_rate, 0.0, 1.0, high_open=True)

    validate_data(d)
    need = {"contours": (3, "three classes (background, interior, contour)"),
            "distance": (1 + DISTANCE_BINS, f"{1 + DISTANCE_BINS} classes (background and {DISTANCE_BINS} of the "
                                            f"distance to the object's edge)")}
    if d.target in need and (m.num_classes != need[d.target][0] or d.mask_type == "classes"):
        raise InvalidInputError(f"config.data.target={d.target!r} trains {need[d.target][1]} on binary or instance "
                                f"masks: set model.num_classes={need[d.target][0]} (got {m.num_classes}) and a "
                                f"mask_type other than 'classes' (got {d.mask_type!r})")
    validate_weights(config.weights)
    _real("loss.dice_weight", config.loss.dice_weight)
    read_augment_config(config.augment)

    _one_of("optimizer.name", o.name, OPTIMIZERS)
    _one_of("optimizer.schedule", o.schedule, SCHEDULES)
    _real("optimizer.learning_rate", o.learning_rate, low_open=True)
    _real("optimizer.momentum", o.momentum, 0.0, 1.0)
    _bool("optimizer.nesterov", o.nesterov)
    _real("optimizer.weight_decay", o.weight_decay)
    _real("optimizer.grad_clip_norm", o.grad_clip_norm)
    accum = _int("optimizer.grad_accum_steps", o.grad_accum_steps)
    warmup = _int("optimizer.warmup_steps", o.warmup_steps, 0)

    num_steps = _int("train.num_steps", t.num_steps)
    updates = num_steps // accum
    if o.schedule != "constant" and updates < 1:
        raise InvalidInputError(f"config.optimizer.grad_accum_steps ({accum}) must be at most train.num_steps "
                                f"({num_steps}) for schedule {o.schedule!r}")
    if o.schedule == "warmup_cosine" and warmup >= updates:
        raise InvalidInputError(f"config.optimizer.warmup_steps must be smaller than the number of optimizer "
                                f"updates (train.num_steps // grad_accum_steps = {updates}), got {warmup}")
    for key, minimum in (("batch_size", 1), ("log_every", 1), ("eval_every", 0), ("checkpoint_every", 0),
                         ("keep_checkpoints", 1), ("max_rollbacks", 0)):
        _int(f"train.{key}", t[key], minimum)
    _real("train.time_limit", t.time_limit)
    _real("train.foreground_fraction", t.foreground_fraction, 0.0, 1.0)
    _bool("train.allow_config_change", t.allow_config_change)
    _bool("train.distributed", t.distributed)
    if t.best_metric:
        _one_of("train.best_metric", t.best_metric, BEST_METRICS)
    _one_of("train.best_mode", t.best_mode, BEST_MODES)
    validate_eval(config)
    _tile_size("train.tile_size", t.tile_size, m)


# ----------------------------------------------------------------------------------------------------------------
# Config files and overrides
# ----------------------------------------------------------------------------------------------------------------

class UsageError(InvalidInputError):
    """An error in what the user asked for; printed as one line, exit code 2."""


def load_config_module(path):
    """Execute a Python config file (with its own directory importable) and return it as a module, checked to
    have ``get_config()`` (host-side). Raises UsageError if missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {str(path)!r} not found (expected a Python file with get_config(), "
                         f"e.g. experiments/synthetic.py)")
    if path.suffix != ".py":
        raise UsageError(f"config file {str(path)!r} is not a Python file (expected a .py file with get_config(), "
                         f"e.g. experiments/synthetic.py)")
    spec = importlib.util.spec_from_file_location(f"unet_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except SystemExit as e:      # exit 0 would end the command as if it had succeeded
        raise UsageError(f"config file {str(path)!r} {_exit_call(e, path)} while it was loaded; a config file "
                         f"defines get_config() and must not exit") from None
    except Exception as e:  # noqa: BLE001 - the user's file: any failure to run it is a usage error
        raise UsageError(f"config file {str(path)!r} could not be run: {_where(e, path)}{type(e).__name__}: "
                         f"{getattr(e, 'msg', None) or e} (--debug shows the traceback)") from e
    finally:
        sys.path.pop(0)
    if not callable(getattr(module, "get_config", None)):
        raise UsageError(f"config file {str(path)!r} has no get_config() function")
    return module


def call_user_function(path, name: str, fn):
    """``fn()``, a function of the user's config file ``path`` (``get_config``, ``get_sweep``): any failure, and
    ``sys.exit`` (which would end the command with its exit code), is a UsageError naming the file and line."""
    path = Path(path)
    try:
        return fn()
    except SystemExit as e:
        raise UsageError(f"{name}() in {str(path)!r} {_exit_call(e, path)}; it must return, not exit") from None
    except Exception as e:  # noqa: BLE001 - the user's function failed
        raise UsageError(f"{name}() in {str(path)!r} failed: {_where(e, path)}{type(e).__name__}: {e} "
                         f"(--debug shows the traceback)") from e


def _exit_call(error: SystemExit, path: Path) -> str:
    """'called sys.exit(0) at line N' for a SystemExit raised in ``path``."""
    where = _where(error, path)
    return f"called sys.exit({error.code!r})" + (f" at {where[:-2]}" if where else "")


def _where(error: BaseException, path: Path) -> str:
    """'line N: ' of the config file where ``error`` happened (a SyntaxError's own line), or ''."""
    line = getattr(error, "lineno", None) if isinstance(error, SyntaxError) else None
    tb = error.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"line {line}: " if line else ""


def load_config_file(path):
    """Load ``get_config()`` from a Python config file (host-side). Raises UsageError if missing or broken,
    if ``get_config()`` raises, or if it returns something other than a ``ml_collections.ConfigDict``."""
    path = Path(path)
    config = call_user_function(path, "get_config", load_config_module(path).get_config)
    if not isinstance(config, ml_collections.ConfigDict):
        raise UsageError(f"get_config() in {str(path)!r} returned a {type(config).__name__}; expected an "
                         f"ml_collections.ConfigDict, e.g. start from unet_jax.config.base_config()")
    return config


def _parse_value(text: str, current):
    """Convert an override string to the type of the field it replaces."""
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"expected true or false, got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"expected an integer, got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"expected a number, got {text!r}") from None
    if isinstance(current, str):
        return text
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config, overrides: Sequence[Tuple[str, str]]):
    """Set ``config.a.b = value`` for each ("a.b", "value") pair, typed like the existing field.

    Raises UsageError naming the key when it does not exist (the nearest existing keys are suggested).
    """
    for key, text in overrides:
        parts = key.split(".")
        node = config
        for i, part in enumerate(parts):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                where = ".".join(parts[:i]) or "config"
                close = difflib.get_close_matches(part, keys, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(sorted(keys))}"
                raise UsageError(f"unknown config key --config.{key}: {where} has no field {part!r}{hint}")
            if i == len(parts) - 1:
                current = node[part]
                if hasattr(current, "keys"):
                    raise UsageError(f"--config.{key} is a section, not a field; set one of its fields, e.g. "
                                     f"--config.{key}.{sorted(current.keys())[0]}=VALUE")
                try:
                    value = _parse_value(text, current)
                except UsageError as e:
                    raise UsageError(f"--config.{key}: {e}") from None
                try:
                    with node.unlocked() if hasattr(node, "unlocked") else contextlib.nullcontext():
                        node[part] = value
                except TypeError as e:
                    raise UsageError(f"--config.{key}: {e}") from None
            else:
                node = node[part]
    return config


def config_lines(config, prefix: str = "") -> list:
    """``'section.key = value'`` for every field of ``config`` (values as Python literals), sections in order."""
    lines = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            lines += config_lines(value, f"{prefix}{key}.")
        else:
            lines.append(f"{prefix}{key} = {value!r}")
    return lines


def resolve_config(config_path: Optional[str], overrides):
    """The experiment config: the file given (or the built-in synthetic default) with overrides applied."""
    if config_path:
        config = load_config_file(config_path)
    else:
        config = synthetic_config()
    config = apply_overrides(config, overrides)
    validate(config)
    return config
