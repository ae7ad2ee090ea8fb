"""The seed's equations, checked against autograd in closed form."""
import pytest
import torch

from ray_style import losses


def test_gram_is_eq3_and_symmetric():
    features = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    flat = features.reshape(2, 5, 12)
    expected = torch.einsum("bim,bjm->bij", flat, flat)
    got = losses.gram(features.float())
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, got.transpose(1, 2))


def test_content_loss_gradient_is_eq2_through_the_relu():
    pre = torch.randn(1, 6, 4, 5, dtype=torch.float64, requires_grad=True)  # the conv output
    target = torch.relu(torch.randn(1, 6, 4, 5, dtype=torch.float64))
    features = torch.relu(pre)  # F^l, after the ReLU
    loss = losses.content_loss(features, target).sum()
    assert torch.isclose(loss, 0.5 * ((features - target) ** 2).sum())  # eq. 1
    loss.backward()
    expected = torch.where(pre > 0, features - target, torch.zeros_like(pre))  # eq. 2
    torch.testing.assert_close(pre.grad, expected.detach())
    assert (pre.grad[pre <= 0] == 0).all()


def test_style_layer_loss_value_is_eq4():
    n, h, w = 4, 3, 5
    m = h * w
    f = torch.rand(1, n, h, w, dtype=torch.float64)
    a = losses.gram(torch.rand(1, n, h, w, dtype=torch.float64)).double()
    g = losses.gram(f).double()
    expected = ((g - a) ** 2).sum() / (4 * n**2 * m**2)
    torch.testing.assert_close(losses.style_layer_loss(g, a, n, m)[0], expected)


def test_style_gradient_is_eq6_and_eq7():
    n, h, w = 4, 3, 5
    m = h * w
    pre = torch.randn(1, n, h, w, dtype=torch.float64, requires_grad=True)
    a = losses.gram(torch.relu(torch.randn(1, n, h, w, dtype=torch.float64))).double()
    features = torch.relu(pre)
    g = torch.einsum("bim,bjm->bij", features.flatten(2), features.flatten(2))
    raw = ((g - a) ** 2).sum()  # the slide's Σ (G − A)²
    (grad_raw,) = torch.autograd.grad(raw, features, retain_graph=True)
    flat_f = features.detach().reshape(n, m)
    slide = 4 * (g.detach()[0] - a[0]) @ flat_f  # eq. 6/7: 4 (G − A) F
    torch.testing.assert_close(grad_raw.reshape(n, m), slide)

    e = losses.style_layer_loss(g, a, n, m).sum()
    e.backward()
    closed = ((g.detach()[0] - a[0]) @ flat_f) / (n**2 * m**2)  # ∂E_l/∂F
    gated = torch.where(pre.detach().reshape(n, m) > 0, closed, torch.zeros_like(closed))
    torch.testing.assert_close(pre.grad.reshape(n, m), gated)


def test_style_loss_weights_layers_and_rescales_per_position_targets():
    fa, fb = torch.rand(1, 3, 4, 4, dtype=torch.float64), torch.rand(1, 5, 2, 2, dtype=torch.float64)
    ta = losses.gram_per_position(torch.rand(1, 3, 8, 8, dtype=torch.float64))  # artwork 4x larger
    tb = losses.gram_per_position(torch.rand(1, 5, 4, 4, dtype=torch.float64))
    got = losses.style_loss({"a": fa, "b": fb}, {"a": ta, "b": tb}, {"a": 0.25, "b": 0.75})
    expected = (0.25 * losses.style_layer_loss(losses.gram(fa), ta * 16, 3, 16)
                + 0.75 * losses.style_layer_loss(losses.gram(fb), tb * 4, 5, 4))
    torch.testing.assert_close(got, expected)


def test_eq4_stays_finite_on_caffe_scale_activations():
    # Real 0-255 VGG activations give Gram entries ≥ 1e9 at small sizes and grow with M and
    # the activations; where squaring (G − A) naively overflows float32, eq. 4 as we compute
    # it stays finite and exact.
    n, h, w = 64, 64, 64
    features = torch.rand(1, n, h, w) * 1e8
    target = torch.rand(1, n, h, w) * 1e7
    g, a = losses.gram(features), losses.gram(target)
    assert g.max() > 1e18
    assert not torch.isfinite(((g - a) ** 2).sum())  # the naive form overflows float32
    value = losses.style_layer_loss(g, a, n, h * w)
    assert torch.isfinite(value).all() and value.item() > 0
    reference = losses.style_layer_loss(g.double(), a.double(), n, h * w)
    torch.testing.assert_close(value.double(), reference, rtol=1e-4, atol=0)


def test_losses_are_per_batch_element():
    x = torch.rand(3, 2, 4, 4)
    assert losses.content_loss(x, torch.zeros(1, 2, 4, 4)).shape == (3,)
    assert losses.tv_loss(torch.rand(3, 3, 5, 5)).shape == (3,)
    assert losses.tv_loss(torch.ones(1, 3, 5, 5)).item() == 0


def test_gram_of_a_channels_last_map_equals_the_contiguous_one():
    features = torch.rand(2, 5, 4, 3)
    torch.testing.assert_close(losses.gram(features.contiguous(memory_format=torch.channels_last)),
                               losses.gram(features))


def _emulated_half_products(monkeypatch):
    """The GPU's half-precision product with a float32 result, emulated on this CPU: float32
    products of the same bf16 numbers (exact) summed in float32."""
    monkeypatch.setattr(losses, "_half_product", lambda a, b: torch.bmm(a.float(), b.float()))
    monkeypatch.setattr(losses, "_half_products_work", lambda device: True)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_bf16_gram_sums_in_fp32_and_has_eq6s_gradient(monkeypatch, layout):
    _emulated_half_products(monkeypatch)
    features = torch.relu(torch.randn(2, 6, 5, 7)).to(torch.bfloat16).contiguous(memory_format=layout)
    features.requires_grad_(True)
    target = losses.gram(torch.rand(1, 6, 5, 7))
    got = losses.gram(features)
    assert got.dtype == torch.float32
    widened = features.detach().double()
    torch.testing.assert_close(got.double(), torch.einsum("bihw,bjhw->bij", widened, widened), rtol=1e-6, atol=0)
    loss = losses.style_layer_loss(got, target, 6, 35).sum()
    (grad,) = torch.autograd.grad(loss, features)
    assert grad.dtype == torch.bfloat16 and grad.is_contiguous(memory_format=layout)
    flat = widened.flatten(2)
    closed = ((got.detach().double() - target.double()) @ flat) / (6**2 * 35**2)  # ∂E/∂F, eq. 6/7
    # (G' + G'ᵀ) is rounded to bf16 as under autocast: close as a whole, not in every tiny entry
    assert (grad.double() - closed.view_as(grad)).norm() < 1e-2 * closed.norm()


def test_style_loss_of_bf16_features_stays_within_one_percent(monkeypatch):
    _emulated_half_products(monkeypatch)
    generator = torch.Generator().manual_seed(0)
    layers = {f"l{i}": torch.relu(torch.randn(1, 32 * (i + 1), 32 // 2**i, 32 // 2**i, generator=generator))
              for i in range(3)}
    targets = {name: losses.gram_per_position(torch.relu(torch.randn(f.shape, generator=generator)))
               for name, f in layers.items()}
    weights = {name: 1 / 3 for name in layers}
    exact = losses.style_loss(layers, targets, weights)
    half = losses.style_loss({name: f.to(torch.bfloat16) for name, f in layers.items()}, targets, weights)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, exact, rtol=0.01, atol=0)
