"""unet_jax.checks: the shared argument checks raise InvalidInputError (a ValueError) naming the argument."""
import numpy as np
import pytest

from unet_jax import checks
from unet_jax.checks import InvalidInputError


def test_error_type_is_a_value_error():
    assert issubclass(InvalidInputError, ValueError)


@pytest.mark.parametrize("value", [True, 1.0, "3", -1, 11])
def test_integer_refuses(value):
    with pytest.raises(InvalidInputError, match="tile_size must be an integer in \\[0, 10\\]"):
        checks.integer("tile_size", value, 0, 10)


def test_integer_accepts_numpy_and_returns_int():
    out = checks.integer("n", np.int64(4), low=1)
    assert out == 4 and type(out) is int


@pytest.mark.parametrize("value,kwargs", [(float("nan"), {}), (0.0, dict(low=0.0, low_open=True)),
                                          (1.0, dict(high=1.0, high_open=True)), (True, {}), ("0.5", {})])
def test_real_refuses(value, kwargs):
    with pytest.raises(InvalidInputError, match="sigma must be a finite number"):
        checks.real("sigma", value, **kwargs)


def test_real_bounds_inclusive_by_default():
    assert checks.real("p", 1, 0, 1) == 1.0 and checks.real("p", 0.0, 0.0, 1.0) == 0.0


def test_boolean_one_of_array_same_shape():
    assert checks.boolean("flip", np.bool_(True)) is True
    with pytest.raises(InvalidInputError, match="flip must be True or False"):
        checks.boolean("flip", 1)
    assert checks.one_of("mode", "a", ("a", "b")) == "a"
    with pytest.raises(InvalidInputError, match="mode must be one of"):
        checks.one_of("mode", "c", ("a", "b"))
    with pytest.raises(InvalidInputError, match="must have 2 dimensions"):
        checks.array("image", np.zeros((2, 2, 2)), ndim=2)
    with pytest.raises(InvalidInputError, match="integer dtype"):
        checks.array("labels", np.zeros((2, 2)), kind="iu")
    assert checks.array("x", [[1, 2]], ndim=(2, 3), kind="iu").shape == (1, 2)
    with pytest.raises(InvalidInputError, match="a and b must have the same shape"):
        checks.same_shape("a", np.zeros(2), "b", np.zeros(3))
