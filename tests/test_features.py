import pytest
import torch

from ray_style import features
from ray_style.errors import InputError
from ray_style.features import VGGFeatures, layer_names


def test_layer_names_follow_the_paper():
    names = layer_names("vgg19")
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert "relu5_4" in names and "relu5_4" not in layer_names("vgg16")
    assert sum(n.startswith("conv") for n in names) == 16


def test_truncates_after_deepest_layer_and_freezes(random_vgg):
    model = VGGFeatures(random_vgg.arch, random_vgg.convs, "torchvision", ["relu1_1", "relu3_1"])
    assert len(model.convs) == 5  # conv1_1 … conv3_1
    assert not any(p.requires_grad for p in model.parameters())
    out = model(torch.rand(2, 3, 32, 40))
    assert set(out) == {"relu1_1", "relu3_1"}
    assert out["relu3_1"].shape == (2, 256, 8, 10)
    assert (out["relu1_1"] >= 0).all()


def test_conv_is_pre_relu_and_pooling_is_selectable(random_vgg):
    x = torch.rand(1, 3, 16, 16)
    avg = VGGFeatures("vgg19", random_vgg.convs, "torchvision", ["conv1_1", "relu1_1", "pool1"], "avg")(x)
    mx = VGGFeatures("vgg19", random_vgg.convs, "torchvision", ["pool1"], "max")(x)
    torch.testing.assert_close(avg["relu1_1"], torch.relu(avg["conv1_1"]))
    assert (avg["conv1_1"] < 0).any()
    relu1_2 = VGGFeatures("vgg19", random_vgg.convs, "torchvision", ["relu1_2"])(x)["relu1_2"]
    torch.testing.assert_close(avg["pool1"], torch.nn.functional.avg_pool2d(relu1_2, 2))
    torch.testing.assert_close(mx["pool1"], torch.nn.functional.max_pool2d(relu1_2, 2))


def test_caffe_preprocessing_is_bgr_0_255_minus_mean(random_vgg):
    model = VGGFeatures("vgg16", random_vgg.convs, "caffe", ["relu1_1"])
    image = torch.zeros(1, 3, 2, 2)
    image[:, 0] = 1.0  # pure red
    x = model.normalize(image)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([-103.939, -116.779, 255 - 123.68]))


def test_unknown_layer_suggests_a_name(random_vgg):
    with pytest.raises(InputError, match="Did you mean 'relu4_2'"):
        VGGFeatures("vgg19", random_vgg.convs, "torchvision", ["relu4_22"])
    with pytest.raises(InputError, match="unknown layer 'relu5_4' for vgg16"):
        VGGFeatures("vgg16", random_vgg.convs, "torchvision", ["relu5_4"])


@pytest.mark.parametrize("shape", [(2, 8, 12, 16), (1, 8, 13, 11), (2, 3, 5, 4)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_pooling_is_avg_pool2d_exactly(shape, layout, dtype):
    # avg_pool2d floors odd sizes: the last row/column is in no cell and gets no gradient.
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype).contiguous(memory_format=layout)
    x.requires_grad_(True)
    upstream = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2).to(dtype)
    reference = torch.nn.functional.avg_pool2d(x, 2)
    (reference_grad,) = torch.autograd.grad(reference, x, upstream)
    fast = features._AvgPool2x2.apply(x)
    (fast_grad,) = torch.autograd.grad(fast, x, upstream)
    assert torch.equal(fast, reference) and torch.equal(fast_grad, reference_grad)
    assert fast_grad.is_contiguous(memory_format=layout)  # written in the input's layout, no copy after
    if shape[2] % 2:
        assert (fast_grad[:, :, -1] == 0).all()


def test_a_bf16_cast_computes_like_autocast(random_vgg):
    model = VGGFeatures("vgg19", random_vgg.convs, "caffe", ["relu1_1", "relu3_1"])
    image = torch.rand(1, 3, 24, 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(image)
    cast = model.cast(torch.bfloat16)
    got = cast(image)
    assert model.convs[0].weight.dtype == torch.float32 and cast.mean.dtype == torch.float32
    for name in expected:
        assert got[name].dtype == torch.bfloat16 and torch.equal(got[name], expected[name])
