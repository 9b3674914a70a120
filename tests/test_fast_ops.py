"""The CPU speed-ups of the training step compute what Paddle's own ops compute."""
import numpy as np
import paddle
import paddle.nn.functional as F

from ernie_qat.train.fast_dropout import dropout, fast_dropout
from ernie_qat.train.fast_linear import fast_linear


def _grads(layer, x):
    x = paddle.to_tensor(x, stop_gradient=False)
    y = layer(x)
    (y * y).sum().backward()
    grads = {"x": x.grad.numpy(), "weight": layer.weight.grad.numpy(), "bias": layer.bias.grad.numpy()}
    layer.clear_gradients()
    return y.numpy(), grads


def test_fast_linear_matches_paddle_linear_and_restores_it():
    paddle.seed(0)
    layer = paddle.nn.Linear(24, 40)
    x = np.random.RandomState(0).randn(3, 50, 24).astype("float32")
    y_ref, ref = _grads(layer, x)
    with fast_linear():
        assert F.linear is not paddle.nn.functional.common.linear
        y, fast = _grads(layer, x)
    assert F.linear is paddle.nn.functional.common.linear
    np.testing.assert_array_equal(y, y_ref)
    for name in ref:
        np.testing.assert_allclose(fast[name], ref[name], rtol=1e-5, atol=1e-5)


def test_fast_dropout_is_upscaled_bernoulli_and_reproducible():
    x = paddle.ones([200, 500])
    paddle.seed(7)
    out = dropout(x, p=0.1).numpy()
    np.testing.assert_allclose(np.unique(out), [0.0, 1 / 0.9], rtol=1e-6)
    assert abs((out == 0).mean() - 0.1) < 0.005  # 100k draws: 0.1 +- 5 sigma
    paddle.seed(7)
    np.testing.assert_array_equal(dropout(x, p=0.1).numpy(), out)
    np.testing.assert_array_equal(dropout(x, p=0.1, training=False).numpy(), x.numpy())


def test_fast_dropout_gradient_is_the_mask_and_the_patch_is_scoped():
    x = paddle.ones([64, 64])
    x.stop_gradient = False
    with fast_dropout():
        out = paddle.nn.Dropout(0.5)(x)
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), out.numpy())  # d(sum(x * mask * 2))/dx = mask * 2 = out for x = 1
    assert F.dropout is paddle.nn.functional.common.dropout
    with fast_dropout(enabled=False):
        assert F.dropout is paddle.nn.functional.common.dropout
