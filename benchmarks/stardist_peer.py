"""StarDist 2D (Schmidt et al. 2018), the peer of benchmarks/objects_vs_stardist.py: trained from scratch on a
folder data set for a budget of process CPU seconds, then its objects on held-out images written as label TIFFs.

Runs in its own environment (TensorFlow CPU; never a dependency of unet_jax):

    python -m venv /tmp/stardist && /tmp/stardist/bin/pip install stardist tensorflow-cpu tifffile
    /tmp/stardist/bin/python benchmarks/stardist_peer.py --train TRAIN --test TEST --cpu-seconds 1200 --out OUT

TRAIN and TEST hold images/ and masks/ (instance labels) of equal names. StarDist's own recipe: images normalised
per image to their 1st/99.8th percentiles (as unet_jax does for 16-bit images), 32 rays, grid 2, 256x256 patches,
batch 4 (the unet_jax folder recipe's tile and batch), flips, rotations by 90 degrees and intensity jitter; 20% of
TRAIN held out to choose the probability and NMS thresholds (``optimize_thresholds``). Writes
OUT/<snapshot>/<name>.tif for each snapshot (at half and at the whole budget) and OUT/stardist.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def read_folder(root: Path):
    import tifffile
    names = sorted(p.name for p in (root / "images").iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    images = [tifffile.imread(root / "images" / n).astype(np.float32) for n in names]
    masks = [tifffile.imread(root / "masks" / n).astype(np.int32) for n in names]
    return names, images, masks


def augment(x, y):
    """Flips, rotations by 90 degrees, intensity scale and shift (StarDist's example augmenter)."""
    k = np.random.randint(4)
    x, y = np.rot90(x, k), np.rot90(y, k)
    if np.random.rand() < 0.5:
        x, y = np.fliplr(x), np.fliplr(y)
    x = x * np.random.uniform(0.6, 2.0) + np.random.uniform(-0.2, 0.2)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, type=Path)
    ap.add_argument("--test", required=True, type=Path)
    ap.add_argument("--cpu-seconds", required=True, type=float, help="training budget in process CPU seconds")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t_cpu, t_wall = cpu_seconds(), time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from csbdeep.utils import normalize
    from stardist import fill_label_holes
    from stardist.models import Config2D, StarDist2D

    np.random.seed(args.seed)
    tf.random.set_seed(args.seed)
    names, images, masks = read_folder(args.train)
    X = [normalize(x, 1, 99.8, axis=(0, 1)) for x in images]
    Y = [fill_label_holes(y) for y in masks]
    order = np.random.default_rng(args.seed).permutation(len(X))
    n_val = max(1, int(round(0.2 * len(X))))
    val, trn = order[:n_val], order[n_val:]
    conf = Config2D(n_rays=32, grid=(2, 2), n_channel_in=1, train_patch_size=(256, 256), train_batch_size=4,
                    use_gpu=False, train_tensorboard=False)
    args.out.mkdir(parents=True, exist_ok=True)
    model = StarDist2D(conf, name="stardist", basedir=str(args.out / "model"))
    budget = float(args.cpu_seconds)
    snapshots = {"half": budget / 2, "full": budget}
    saved = {}

    class Budget(tf.keras.callbacks.Callback):
        """Saves the weights when the process has used half of the CPU budget, stops training at all of it."""

        def on_train_batch_end(self, batch, logs=None):
            used = cpu_seconds() - t_cpu
            for key, limit in snapshots.items():
                if key not in saved and used >= limit:
                    path = args.out / f"weights_{key}.weights.h5"
                    self.model.save_weights(str(path))
                    saved[key] = {"cpu_seconds": used, "wall_seconds": time.perf_counter() - t_wall,
                                  "steps": int(self.model.optimizer.iterations.numpy())}
            if "full" in saved:
                self.model.stop_training = True

    model.prepare_for_training()
    model.callbacks.append(Budget())
    model.train([X[i] for i in trn], [Y[i] for i in trn], validation_data=([X[i] for i in val], [Y[i] for i in val]),
                augmenter=augment, epochs=100000, steps_per_epoch=50)
    import tifffile
    test_names, test_images, _ = read_folder(args.test)
    result = {"budget_cpu_seconds": budget, "snapshots": {}}
    for key in snapshots:
        if key not in saved:
            continue
        model.keras_model.load_weights(str(args.out / f"weights_{key}.weights.h5"))
        model.optimize_thresholds([X[i] for i in val], [Y[i] for i in val])
        folder = args.out / key
        folder.mkdir(exist_ok=True)
        for name, image in zip(test_names, test_images):
            labels, _ = model.predict_instances(normalize(image, 1, 99.8, axis=(0, 1)))
            tifffile.imwrite(folder / name, labels.astype(np.uint16))
        result["snapshots"][key] = dict(saved[key], thresholds=dict(model.thresholds._asdict()))
    (args.out / "stardist.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
