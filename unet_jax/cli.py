"""The ``unet-jax`` command line: ``train``, ``evaluate``, ``predict``, ``export``, ``ablate``, ``augment-preview``,
``config show``. Each subcommand parses its arguments and calls one importable function (host-side).

``--config.SECTION.KEY=VALUE`` overrides one field of the experiment file's ``get_config()``. Exit code 2 with one
line on stderr (``--debug``: the traceback) for what the user can fix or the run itself reported: invalid input
(``checks.InvalidInputError``, config errors included), usage (argparse), files (OSError: missing, unwritable, a
full disk), a diverged run, an unreadable checkpoint, an incomplete sweep, an export's missing optional
dependency. Any other exception is a bug and shows its traceback (exit 1). ``train`` stopped by SIGTERM, SIGINT
or SIGUSR1 saves its step and exits with 128 + the signal's number (``unet_jax.signals``).
"""
from __future__ import annotations

import argparse
import errno
import importlib.metadata
import logging
import sys
import warnings
from typing import List, Optional, Sequence, Tuple

import unet_jax
from unet_jax import configure_cpu
from unet_jax.ablate import SweepIncomplete, run_sweep
from unet_jax.checkpoint import CheckpointRestoreError
from unet_jax.checks import InvalidInputError
from unet_jax.config import (UsageError, apply_overrides, base_config, config_lines, load_config_file,
                             resolve_config, validate)
from unet_jax.evaluate import evaluate
from unet_jax.export import FORMATS, INSTALL_HINT, export_model
from unet_jax.predict import predict_paths
from unet_jax.preview import preview_from_config
from unet_jax.signals import TrainingInterrupted
from unet_jax.train import TRIVIAL_MARGIN, DivergenceError, NonFiniteLossError, train_and_evaluate

EXIT_USAGE = 2


def split_overrides(argv: Sequence[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Separate ``--config.a.b=v`` / ``--config.a.b v`` overrides from the other arguments."""
    rest, overrides = [], []
    argv = list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            body = arg[len("--config."):]
            if "=" in body:
                key, value = body.split("=", 1)
            elif i + 1 < len(argv):
                key, value = body, argv[i + 1]
                i += 1
            else:
                raise UsageError(f"{arg} needs a value: {arg}=VALUE")
            overrides.append((key, value))
        else:
            rest.append(arg)
        i += 1
    return rest, overrides



# ------------------------------------------------------------------------------------------------------------
# Subcommands
# ------------------------------------------------------------------------------------------------------------

def _cmd_train(args, overrides):
    config = resolve_config(args.config, overrides)
    metrics = train_and_evaluate(config, args.workdir)
    _print_metrics("final", metrics)
    _print_train_summary(config, args.workdir, metrics)


def _print_train_summary(config, workdir, metrics):
    """What a user needs after training: the kept step, its validation measures, a verdict and the next command."""
    best, kept = metrics.get("best_step"), metrics.get("best_validation") or {}
    if best is not None and kept:
        _print_metrics(f"kept checkpoint: step {best} (best validation {config.train.best_metric}, "
                       f"{'higher' if config.train.best_mode == 'max' else 'lower'} is better)", kept)
    else:
        print(f"kept checkpoint: the latest, step {metrics['step']} (no validation measure to choose by)")
    if metrics.get("rollbacks"):
        print(f"note: the loss diverged {metrics['rollbacks']} time(s); training went back and continued with a "
              f"lower learning rate (see {workdir}/guard.json)")
    if "iou" in kept and "trivial_iou" in kept and kept["iou"] <= kept["trivial_iou"] + TRIVIAL_MARGIN:
        print(f"WARNING: the kept model (validation IoU {kept['iou']:.3f}) does not beat a trivial all-background "
              f"or all-foreground prediction (IoU {kept['trivial_iou']:.3f}): it has learned nothing useful. Train "
              f"longer (--config.train.num_steps), check the masks, or start from experiments/folder.py.")
    print(f"next: unet-jax predict --workdir {workdir} --input YOUR_IMAGES --output predictions/")


def _cmd_evaluate(args, overrides):
    result = evaluate(args.workdir, split=args.split, tta=args.tta, step=args.step, output_dir=args.output,
                      overrides=overrides, write_images=not args.no_images)
    _print_metrics(f"{args.split} mean (checkpoint step {result['step']})", result["mean"])
    if result["stack"]:
        _print_metrics(f"{args.split} as one stack (ISBI 2012 challenge measures)", result["stack"])
    if result["objects"]:
        _print_metrics(f"{args.split} objects ({result['instances']}, IoU 0.5, counts pooled)", result["objects"])
    print(f"per-image metrics: {result['csv']}")


def _cmd_predict(args, overrides):
    written = predict_paths(args.workdir, args.input, args.output, tta=args.tta, step=args.step,
                            overrides=overrides, overwrite=args.overwrite)
    print(f"wrote {len(written)} files to {args.output}")


def _cmd_export(args, overrides):
    if overrides:
        raise UsageError(f"export takes no config overrides (--config.{overrides[0][0]}): the network and its "
                         f"settings come from the workdir's checkpoint; choose the tile with --tile-size")
    try:
        paths, info = export_model(args.workdir, args.format, args.output, step=args.step, overwrite=args.overwrite,
                                   tile_size=args.tile_size, return_info=True)
    except ImportError as e:
        if INSTALL_HINT not in str(e):     # not export's optional dependency (onnx): a bug, keep the traceback
            raise
        raise UsageError(str(e)) from e
    extra = "".join(f"; {p}" for p in paths[1:])
    print(f"wrote {paths[0]} ({args.format}, checkpoint step {info['step']}, input tile {info['tile_size']} -> "
          f"output {info['output_size']}, halo {info['halo']}{extra})")


def _cmd_ablate(args, overrides):
    try:
        summary = run_sweep(args.config, args.workdir, overrides=overrides, seeds=args.seeds)
    except SweepIncomplete as e:       # the finished runs' table first, then the error line
        if e.summary:
            _print_sweep(e.summary)
        raise
    _print_sweep(summary)


def _print_sweep(summary):
    print(summary["markdown"])
    print(f"table: {summary['markdown_path']}  csv: {summary['csv_path']}  plot: {summary['png_path']}")


def _cmd_preview(args, overrides):
    config = resolve_config(args.config, overrides)
    path = preview_from_config(config, args.output, n=args.n, seed=args.seed)
    print(f"wrote {path}")


def _cmd_config_show(args, overrides):
    config = load_config_file(args.config) if args.config else base_config()
    config = apply_overrides(config, overrides)
    needs_root = config.data.name != "synthetic_cells" and not config.data.root
    checked = config.copy_and_resolve_references()
    if needs_root:          # the data folder is the user's to give at train time: check everything else
        checked.data.root = "FOLDER"
    validate(checked)
    print("\n".join(config_lines(config)))
    if needs_root:
        print("unet-jax: note: train needs the data folder: --config.data.root=FOLDER", file=sys.stderr)


def _print_metrics(title, metrics):
    items = ", ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())
                      if isinstance(v, (int, float)))
    print(f"{title}: {items}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unet-jax",
        description="U-Net (Ronneberger et al. 2015) for biomedical image segmentation, in JAX/Flax.",
        epilog="Config overrides: --config.SECTION.KEY=VALUE, e.g. --config.optimizer.learning_rate=0.01 "
               "--config.train.num_steps=200. See experiments/ for the configs.")
    p.add_argument("--version", action="version", version=f"unet-jax {package_version()}",
                   help="print the installed version and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a U-Net (default: the built-in synthetic data, no download)",
                       description="Train with a config file; writes checkpoints, metrics.jsonl, TensorBoard "
                                   "events and a training-curve PNG to --workdir. Re-running the same command "
                                   "resumes from the last checkpoint.")
    t.add_argument("--config", help="experiment config file (default: the built-in synthetic experiment)")
    t.add_argument("--workdir", required=True, help="output directory (checkpoints, logs)")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a trained workdir on a data split",
                       description="Restore the best (or --step) checkpoint, predict the split with overlap-tile "
                                   "inference and report pixel, Rand and warping error, VI, IoU and SEG per image.")
    e.add_argument("--workdir", required=True, help="a workdir written by `unet-jax train`")
    e.add_argument("--split", default="validation", choices=["train", "validation", "test"],
                   help="data split to evaluate (default: validation)")
    e.add_argument("--tta", action="store_true", help="average over the 8 flips/rotations")
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: best, else latest)")
    e.add_argument("--output", default=None, help="output directory (default: WORKDIR/eval_SPLIT)")
    e.add_argument("--no-images", action="store_true", help="write only the metrics, no TIFFs/PNGs")
    e.set_defaults(func=_cmd_evaluate)

    r = sub.add_parser("predict", help="segment images (tif/png files or a folder) with a trained workdir",
                       description="Writes per input NAME_prob.tif (cell probability, float32), NAME_labels.tif "
                                   "(instance labels) and NAME_overlay.png. Stacks are predicted slice by slice.")
    r.add_argument("--workdir", required=True, help="a workdir written by `unet-jax train`")
    r.add_argument("--input", required=True, help="an image file (tif/png, 2D or a stack) or a folder of them")
    r.add_argument("--output", required=True, help="output directory")
    r.add_argument("--tta", action="store_true", help="average over the 8 flips/rotations")
    r.add_argument("--step", type=int, default=None, help="checkpoint step (default: best, else latest)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace files in --output that have an output's name (default: refuse, write nothing)")
    r.set_defaults(func=_cmd_predict)

    x = sub.add_parser("export", help="export a trained workdir's network: StableHLO, ONNX, bioimage.io package",
                       description="Writes the network with its kept (or --step) checkpoint's weights for use "
                                   "outside this package, for one fixed square input tile and any batch size: "
                                   "stablehlo: OUTPUT (jax.export, NHWC, float32 input in [0, 1], softmax "
                                   "probabilities out) and OUTPUT.json (shapes, halo, pre-processing); onnx: one "
                                   "NCHW .onnx file; bioimageio: a bioimage.io model package (rdf.yaml, ONNX "
                                   "weights, test tensors) as a folder, or a zip if OUTPUT ends in .zip (for "
                                   "deepImageJ in Fiji, napari). onnx and bioimageio need "
                                   "pip install 'unet-jax[export]'. Takes no --config overrides.")
    x.add_argument("--workdir", required=True, help="a workdir written by `unet-jax train`")
    x.add_argument("--step", type=int, default=None, help="checkpoint step (default: best, else latest)")
    x.add_argument("--format", required=True, choices=FORMATS, help="output format")
    x.add_argument("--output", required=True, help="output file (.stablehlo, .onnx, .zip) or package folder")
    x.add_argument("--tile-size", type=int, default=None,
                   help="input tile side in pixels (default: the workdir's eval.tile_size); must be a valid "
                        "U-Net input size (an invalid one is refused with the nearest valid sizes)")
    x.add_argument("--overwrite", action="store_true", help="replace an existing output (default: refuse)")
    x.set_defaults(func=_cmd_export)

    a = sub.add_parser("ablate", help="run an ablation sweep (variants x seeds) and tabulate the results",
                       description="Runs each variant of the sweep file's get_sweep() with equal budgets and "
                                   "several seeds, then writes results.md, results.csv and results.png (mean +- "
                                   "std). Interrupted sweeps resume: finished runs are skipped.")
    a.add_argument("--config", required=True, help="sweep file (experiments/ablations/*.py)")
    a.add_argument("--workdir", required=True, help="output directory: one run folder per variant and seed, and "
                                                     "the results tables")
    a.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the sweep's)")
    a.set_defaults(func=_cmd_ablate)

    v = sub.add_parser("augment-preview", help="write a PNG grid of augmented training tiles",
                       description="Samples training tiles of the config's data set, augments them as the "
                                   "config says and draws the label borders over them.")
    v.add_argument("--config", help="experiment config file (default: the built-in synthetic experiment)")
    v.add_argument("--output", default="augment_preview.png", help="output PNG file or folder "
                                                                   "(default: augment_preview.png)")
    v.add_argument("-n", type=int, default=8, help="number of tiles")
    v.add_argument("--seed", type=int, default=0, help="seed of the crops and the augmentation (default: 0)")
    v.set_defaults(func=_cmd_preview)

    c = sub.add_parser("config", help="show an experiment's configuration",
                       description="config show: print every config field as SECTION.KEY = VALUE.")
    cs = c.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = cs.add_parser("show", help="print every config field with its value, one SECTION.KEY = VALUE a line",
                         description="Print every field of the experiment config, after --config.KEY=VALUE "
                                     "overrides and the same checks as train.")
    show.add_argument("--config", help="experiment config file (default: the schema's defaults, "
                                       "unet_jax.config.base_config)")
    show.set_defaults(func=_cmd_config_show)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    configure_cpu()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    debug = "--debug" in argv
    if not debug:
        _quiet_closed_loop_errors()
        warnings.formatwarning = lambda message, category, *a, **k: f"unet-jax: warning: {message}\n"
    try:
        rest, overrides = split_overrides(argv)
        args = parser.parse_args(rest)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("unet_jax.summary").setLevel(logging.INFO)   # what was done to the user's data
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        args.func(args, overrides)
        return 0
    except TrainingInterrupted as e:     # SIGTERM / SIGINT during train: the step was saved
        print(f"unet-jax: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("unet-jax: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:     # what a user can fix, or the run reported, is one line; any other error is a bug
        if debug:
            raise
        msg = str(e)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            msg = f"no space left on the device while writing {e.filename or 'the output'}; free space there or " \
                  f"choose another folder (--workdir, --output)"
        print(f"unet-jax: error: {msg}", file=sys.stderr)
        return EXIT_USAGE


# Exit code 2: invalid input (config errors are InvalidInputError too), files (missing, unwritable, a full disk),
# and the run's own errors: a diverged run, an unreadable checkpoint, a sweep with failed runs.
USER_ERRORS = (InvalidInputError, OSError, DivergenceError, NonFiniteLossError, CheckpointRestoreError,
               SweepIncomplete)


def package_version() -> str:
    """The installed distribution's version (importlib.metadata), else the package's own ``__version__``."""
    try:
        return importlib.metadata.version("unet-jax")
    except importlib.metadata.PackageNotFoundError:
        return unet_jax.__version__


def _quiet_closed_loop_errors() -> None:
    """After a failed checkpoint read, the checkpoint library's storage threads can still call back into its
    closed asyncio loop, and each call prints 'RuntimeError: Event loop is closed' (through
    ``sys.unraisablehook``) or asyncio's 'Task exception was never retrieved' around the one-line message; drop
    exactly those, pass everything else on."""
    default = sys.unraisablehook
    if getattr(default, "unet_jax_quiet", False):
        return

    def hook(unraisable):
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        default(unraisable)

    hook.unet_jax_quiet = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_drop_unretrieved)   # the same reads' results, once their loop is gone


def _drop_unretrieved(record) -> bool:
    return not record.getMessage().endswith("exception was never retrieved")


if __name__ == "__main__":
    sys.exit(main())
