"""Object measures of the nuclei_instances runs on their validation split (20x/40x images held out from
training, the scale the network was trained at), for each way of making objects.

    python benchmarks/nuclei_validation.py runs/nuclei_sep/*/

Prints one JSON line per workdir: object F1 at IoU 0.5 and DSB mean AP of components and watershed objects (with
the run's eval.min_object_fraction) pooled over the validation images, and the foreground IoU.
"""
import argparse
import json
import sys


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdirs", nargs="+", help="workdirs of nuclei_instances runs (e.g. runs/nuclei_sep/*/)")
    workdirs = p.parse_args(argv).workdirs
    from unet_jax import configure_cpu
    configure_cpu()
    from unet_jax import metrics
    from unet_jax.data import load_split
    from unet_jax.workdir import load_model
    from unet_jax.inference import foreground_probability, predict_probabilities
    from unet_jax.instances import label_instances
    out = []
    for workdir in workdirs:
        model, config, variables, step = load_model(workdir)
        e = config.eval
        methods = {"components": dict(method="components"),
                   "watershed": dict(method="watershed", h=float(e.watershed_h), smooth=float(e.watershed_smooth))}
        matches = {m: [] for m in methods}
        inter = union = 0
        for ex in load_split(config.data, config.weights, "validation"):
            fg = foreground_probability(predict_probabilities(model, variables, ex["image"], e))
            truth = ex["instances"]
            inter += int(((fg > e.threshold) & (truth > 0)).sum())
            union += int(((fg > e.threshold) | (truth > 0)).sum())
            for m, kw in methods.items():
                objects = label_instances(fg, float(e.threshold), min_fraction=float(e.min_object_fraction), **kw)
                matches[m].append(metrics.object_matches(objects, truth))
        row = {"workdir": str(workdir), "step": int(step), "iou": inter / union}
        row.update({m: metrics.object_scores(v) for m, v in matches.items()})
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
