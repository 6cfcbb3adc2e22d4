import jax
import jax.numpy as jnp
import pytest

from unet_jax.geometry import border, output_size, unet_flops, valid_input_size, valid_input_sizes
from unet_jax.model import UNet


def test_output_size_and_valid_input_size_round_trip():
    assert output_size(572) == 388
    assert valid_input_size(388) == 572
    assert border() == 92
    for depth in (2, 3, 4, 5):
        sizes = valid_input_sizes(depth, upto=800)
        assert sizes and all(output_size(s, depth) > 0 for s in sizes)
        for s in sizes:
            o = output_size(s, depth)
            assert valid_input_size(o, depth) == s
            assert (s - o) % 2 == 0 and (s - o) // 2 == border(depth)
        # Every size between valid sizes is invalid.
        for s in range(sizes[0], sizes[-1]):
            if s not in sizes:
                with pytest.raises(ValueError):
                    output_size(s, depth)
    assert valid_input_size(389) == 588
    assert output_size(64, 4, "SAME") == 64
    assert valid_input_size(50, 4, "SAME") == 64


def test_output_size_errors_name_nearest():
    with pytest.raises(ValueError, match=r"556, 572"):
        output_size(570)
    with pytest.raises(ValueError, match=r"188"):
        output_size(100)
    with pytest.raises(ValueError, match="padding"):
        output_size(572, padding="valid")
    with pytest.raises(ValueError, match="depth"):
        output_size(572, depth=0)
    with pytest.raises(ValueError, match="size must be positive"):
        output_size(-4)
    with pytest.raises(ValueError, match="min_output"):
        valid_input_size(0)
    with pytest.raises(ValueError, match="NHWC"):
        UNet(features=4, depth=2).init(jax.random.PRNGKey(0), jnp.zeros((44, 44, 1)))


def test_flop_count_paper():
    # Direct count: (convs of the paper network at 572) about 2 * 150 GMAC.
    f = unet_flops(572)
    assert 2.5e11 < f < 3.5e11
    assert unet_flops(572, features=32) < f / 3.5
