"""unet-jax: U-Net (Ronneberger, Fischer, Brox 2015) in JAX/Flax.

Conventions, kept everywhere:
- images: float32 in [0, 1], NHWC when batched (N, H, W, C), (H, W, C) or (H, W) for one image;
- instance labels: int32 (H, W), 0 = background/membrane, 1..K = objects (cells);
- class labels for training: int32 (N, H, W), 0 = background/membrane, 1 = cell (``instances > 0``);
- weight maps: float32 (H, W), the paper's w(x) (``unet_jax.weights.unet_weight_map``);
- logits: float32 (N, H, W, num_classes); probabilities (H, W, num_classes) after softmax.
Host-side modules (weights, metrics, data builders, cli) use numpy; model, losses, augment, the sampler and the
train step are pure jax.numpy and run inside jit.
Importing the package changes no environment variable; on CPUs call ``unet_jax.configure_cpu()`` before running
JAX code for faster convolutions (``unet_jax.xla_cpu``).
"""
from unet_jax.geometry import output_size, valid_input_size
from unet_jax.model import UNet
from unet_jax.xla_cpu import configure_cpu

__all__ = ["UNet", "configure_cpu", "output_size", "valid_input_size"]
__version__ = "0.1.0"
