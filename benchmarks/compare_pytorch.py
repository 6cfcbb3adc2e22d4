"""Benchmark: the same U-Net train step in PyTorch (the baseline) and in unet-jax, side by side in one process.

    python benchmarks/compare_pytorch.py --features 16 --tile 572 --repeats 5

PyTorch is needed only here (``pip install torch``), never by the package. Both steps: forward in train mode
(drop-out on), pixel-weighted softmax cross-entropy, backward, SGD with momentum 0.99. Prints one JSON object with
median seconds per step of each and ratio = jax / torch (<= 1 means unet-jax is at least as fast).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import machine, make_jax_step, time_fn  # noqa: E402

from unet_jax.model import output_size, unet_flops  # noqa: E402


def make_torch_step(features, depth, tile, batch, dtype="float32"):
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3), nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3),
                             nn.ReLU(inplace=True))

    class TorchUNet(nn.Module):
        def __init__(self):
            super().__init__()
            f = [features * 2 ** i for i in range(depth + 1)]
            self.down = nn.ModuleList([block(1 if i == 0 else f[i - 1], f[i]) for i in range(depth)])
            self.bottom = block(f[depth - 1], f[depth])
            self.up = nn.ModuleList([nn.ConvTranspose2d(f[i + 1], f[i], 2, stride=2) for i in range(depth)])
            self.dec = nn.ModuleList([block(2 * f[i], f[i]) for i in range(depth)])
            self.head = nn.Conv2d(f[0], 2, 1)
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            skips = []
            for i, b in enumerate(self.down):
                x = b(x)
                if i == depth - 1:
                    x = self.drop(x)
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
            x = self.drop(self.bottom(x))
            for i in reversed(range(depth)):
                x = self.up[i](x)
                s = skips[i]
                dh, dw = (s.shape[2] - x.shape[2]) // 2, (s.shape[3] - x.shape[3]) // 2
                x = torch.cat([s[:, :, dh:dh + x.shape[2], dw:dw + x.shape[3]], x], 1)
                x = self.dec[i](x)
            return self.head(x)

    torch.manual_seed(0)
    net = TorchUNet().train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.99)
    out = output_size(tile, depth)
    x = torch.rand(batch, 1, tile, tile)
    y = torch.randint(0, 2, (batch, out, out))
    w = torch.rand(batch, out, out) * 1.5 + 0.5
    autocast = dtype == "bfloat16"

    def step(i):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = net(x)
        ce = nn.functional.cross_entropy(logits.float(), y, reduction="none")
        loss = (ce * w).sum() / w.sum()
        loss.backward()
        opt.step()
        return loss.item()

    return step, torch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--tile", type=int, default=572)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--impl", default="fast", choices=["fast", "plain"])
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    tstep, torch = make_torch_step(a.features, a.depth, a.tile, a.batch, a.dtype)
    t_med, t_first, t_ts = time_fn(tstep, a.repeats)
    j_med, j_first, j_ts = time_fn(make_jax_step(a.features, a.depth, a.tile, a.batch, a.dtype, a.impl), a.repeats)
    flops = 3 * unet_flops(a.tile, a.features, a.depth) * a.batch
    print(json.dumps({
        "benchmark": "compare_pytorch", "features": a.features, "depth": a.depth, "tile": a.tile, "batch": a.batch,
        "dtype": a.dtype, "impl": a.impl, "machine": dict(machine(), torch=torch.__version__,
                                                          torch_threads=torch.get_num_threads()),
        "torch_median_s": t_med, "jax_median_s": j_med, "ratio_jax_over_torch": j_med / t_med,
        "torch_times_s": t_ts, "jax_times_s": j_ts, "torch_tflops": flops / t_med / 1e12,
        "jax_tflops": flops / j_med / 1e12}, indent=1))


if __name__ == "__main__":
    main()
