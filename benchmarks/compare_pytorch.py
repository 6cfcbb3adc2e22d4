"""Benchmark: the same U-Net train step in PyTorch (the baseline) and in unet-jax, side by side in one process.

    python benchmarks/compare_pytorch.py --features 16 --tile 572 --repeats 7 --impl fast --impl plain:jaxdefault

PyTorch is needed only here (``pip install torch``), never by the package. Both steps: forward in train mode
(drop-out on), pixel-weighted softmax cross-entropy, backward, SGD with momentum 0.99; ``--dtype bfloat16`` runs
PyTorch's forward under autocast and unet-jax with ``UNet(dtype=bfloat16)`` (parameters float32 in both).
``--impl`` (repeatable, default 'fast') takes the configurations of ``train_step.py`` ('IMPL[:XLA]'). The steps
are timed interleaved (torch, then each jax configuration, per round); ``--threads N`` pins the process to N CPUs
and sets PyTorch's thread count to N (default: all allowed CPUs). Prints one JSON object with median seconds per
step of each (and minimum and process CPU time) and ratio = jax / torch (<= 1: unet-jax at least as fast);
``jax_median_s`` and ``ratio_jax_over_torch`` refer to the first ``--impl``. PyTorch runs on the GPU when it sees
one (``--device``; JAX uses its default backend), ``--torch-compile`` times ``torch.compile`` instead of eager.
"""
import argparse
import json
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import time_interleaved  # noqa: E402
from train_step import add_common_args, loadavg, machine, make_jax_step, parse_config, set_threads  # noqa: E402

from unet_jax import configure_cpu  # noqa: E402
from unet_jax.geometry import output_size, unet_flops  # noqa: E402


def torch_device(device="auto"):
    """'auto' -> 'cuda' when PyTorch sees a GPU, else 'cpu'; other names pass through."""
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def make_torch_step(features, depth, tile, batch, dtype="float32", device="cpu", compile=False):
    """A PyTorch SGD step of the same network on fixed random data; returns (``step(i) -> loss float``, torch).

    ``device`` 'cpu', 'cuda' or 'auto' (``torch_device``). On a GPU the network and input are channels-last, cuDNN
    picks its algorithms by benchmarking and float32 convolutions and matrix products use TF32 tensor cores (as
    JAX does by default on GPUs); bfloat16 is autocast. ``compile=True`` wraps forward and loss in
    ``torch.compile`` (the backward is compiled with it; the optimizer step stays eager).
    """
    import torch
    from torch import nn
    device = torch.device(torch_device(device))
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True

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
    net = TorchUNet().to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.99)
    out = output_size(tile, depth)
    x = torch.rand(batch, 1, tile, tile, device=device)
    y = torch.randint(0, 2, (batch, out, out), device=device)
    w = torch.rand(batch, out, out, device=device) * 1.5 + 0.5
    if cuda:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = dtype == "bfloat16"

    def forward_loss(x, y, w):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = net(x)
        ce = nn.functional.cross_entropy(logits.float(), y, reduction="none")
        return (ce * w).sum() / w.sum()

    if compile:
        forward_loss = torch.compile(forward_loss)

    def step(i):
        opt.zero_grad(set_to_none=True)
        loss = forward_loss(x, y, w)
        loss.backward()
        opt.step()
        return loss.item()

    return step, torch


def main(argv=None):
    configure_cpu()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p)
    p.add_argument("--impl", action="append", help="IMPL[:XLA] (see train_step.py), repeatable; default 'fast'")
    p.add_argument("--device", default="auto", help="PyTorch device: auto (cuda if available), cpu or cuda")
    p.add_argument("--torch-compile", action="store_true", help="torch.compile the PyTorch forward and loss")
    a = p.parse_args(argv)
    set_threads(a.threads)
    specs = a.impl or ["fast"]
    configs = {s: parse_config(s) for s in specs}
    tstep, torch = make_torch_step(a.features, a.depth, a.tile, a.batch, a.dtype, device=a.device,
                                   compile=a.torch_compile)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    load_before = loadavg()
    fns = {"torch": tstep}
    fns.update({"jax " + s: make_jax_step(a.features, a.depth, a.tile, a.batch, a.dtype, impl,
                                          compiler_options=opts) for s, (impl, opts) in configs.items()})
    timings = time_interleaved(fns, a.repeats, a.warmup)
    flops = 3 * unet_flops(a.tile, a.features, a.depth) * a.batch
    t_med = timings["torch"]["median_s"]
    jax_res = {}
    for s in specs:
        r = timings["jax " + s]
        r.update(ratio_jax_over_torch=r["median_s"] / t_med, tflops=flops / r["median_s"] / 1e12)
        jax_res[s] = r
    first = jax_res[specs[0]]
    print(json.dumps({
        "benchmark": "compare_pytorch", "features": a.features, "depth": a.depth, "tile": a.tile, "batch": a.batch,
        "dtype": a.dtype, "repeats": a.repeats, "load_before": load_before, "load_after": loadavg(),
        "machine": dict(machine(), torch=torch.__version__, torch_threads=torch.get_num_threads()),
        "torch_median_s": t_med, "jax_median_s": first["median_s"], "ratio_jax_over_torch": first["median_s"] / t_med,
        "torch": dict(timings["torch"], tflops=flops / t_med / 1e12), "jax": jax_res}, indent=1))


if __name__ == "__main__":
    main()
