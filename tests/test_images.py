import numpy as np
import pytest
from PIL import Image

from ray_style import images
from ray_style.errors import InputError
from tests.conftest import SAMPLES

ORIENTATION = 0x0112


def _ramp16(height=8, width=64) -> np.ndarray:
    """A horizontal 16-bit ramp 0 … 65535."""
    return np.tile(np.linspace(0, 65535, width).round().astype(np.uint16), (height, 1))


def test_16_bit_grey_png_keeps_its_values(tmp_path):
    ramp = _ramp16()
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as opened:
        assert opened.mode == "I;16"  # the case Pillow's convert("RGB") turns white
    loaded = images.load_image(tmp_path / "g16.png")
    assert loaded.shape == (8, 64, 3) and loaded.dtype == np.uint8
    assert np.array_equal(loaded[..., 0], loaded[..., 2])  # grey
    assert np.abs(loaded[..., 0].astype(int) - ramp.astype(int) / 257).max() <= 0.5
    assert loaded[0, 0, 0] == 0 and loaded[0, 32, 0] in (129, 130) and loaded[0, -1, 0] == 255


@pytest.mark.parametrize("mode", ["I;16B", "I;16L", "I"])
def test_other_integer_greys_scale_the_same(mode):
    ramp = _ramp16()
    if mode == "I":
        image = Image.fromarray(ramp.astype(np.int32), "I")
    else:
        dtype = ">u2" if mode == "I;16B" else "<u2"
        image = Image.frombytes(mode, (64, 8), ramp.astype(dtype).tobytes())
    rgb = images.to_rgb(image)
    assert np.abs(rgb[..., 1].astype(int) - ramp.astype(int) / 257).max() <= 0.5


def test_32_bit_tiff_and_float_greys(tmp_path):
    Image.fromarray(_ramp16().astype(np.int32), "I").save(tmp_path / "i32.tif")
    assert images.load_image(tmp_path / "i32.tif")[0, -1, 0] == 255
    ones = np.linspace(0, 1, 64, dtype=np.float32)[None].repeat(4, 0)
    Image.fromarray(ones, "F").save(tmp_path / "f.tif")
    loaded = images.load_image(tmp_path / "f.tif")
    assert loaded[0, 0, 0] == 0 and loaded[0, -1, 0] == 255 and 120 <= loaded[0, 32, 0] <= 135
    wide = Image.fromarray(ones * 4000 - 1000, "F")  # not in [0, 1]: its own range is stretched
    stretched = images.to_rgb(wide)
    assert stretched[0, 0, 0] == 0 and stretched[0, -1, 0] == 255


def test_transparency_lies_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :2, 3] = 255  # left half opaque red, right half fully transparent (black underneath)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    loaded = images.load_image(tmp_path / "rgba.png")
    assert loaded[0, 0].tolist() == [255, 0, 0] and loaded[0, 3].tolist() == [255, 255, 255]
    Image.fromarray(rgba[..., [0, 3]], "LA").save(tmp_path / "la.png")
    assert images.load_image(tmp_path / "la.png")[0, 3].tolist() == [255, 255, 255]


def test_palette_transparency_lies_over_white(tmp_path):
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.save(tmp_path / "p.png", transparency=0)
    loaded = images.load_image(tmp_path / "p.png")
    assert loaded[0, 0].tolist() == [0, 0, 255] and loaded[3, 3].tolist() == [255, 255, 255]


def test_cmyk_becomes_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / "cyan.jpg", quality=100)
    pixel = images.load_image(tmp_path / "cyan.jpg")[4, 4].astype(int)
    assert pixel[0] < 30 and pixel[1] > 225 and pixel[2] > 225


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_makes_a_phone_photo_upright(tmp_path, suffix):
    stored = np.zeros((20, 40, 3), np.uint8)  # as the sensor stored it: wide, marker top-left
    stored[:6, :6] = 255
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90° clockwise to display"
    options = {"quality": 100} if suffix == ".jpg" else {}
    Image.fromarray(stored).save(tmp_path / f"phone{suffix}", exif=exif, **options)
    loaded = images.load_image(tmp_path / f"phone{suffix}")
    assert loaded.shape == (40, 20, 3)  # upright: tall
    assert loaded[2, -3].min() > 200 and loaded[2, 2].max() < 50  # the marker moved to the top right


def test_ordinary_images_load_as_before(photo):
    with Image.open(SAMPLES / "chelsea.png") as image:
        assert np.array_equal(photo, np.asarray(image.convert("RGB")))


def test_unreadable_image_is_one_line(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read image") as error:
        images.load_image(tmp_path / "bad.png")
    assert "\n" not in str(error.value)


def test_save_image_is_atomic_and_follows_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = images.save_image(np.zeros((4, 4, 3), np.uint8), tmp_path / "x.png")
        images.save_image(np.zeros((4, 4, 3), np.uint8), tmp_path / "y.png", durable=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png", "y.png"]  # no temp left


def test_16_bit_pixels_in_and_out_and_their_colour_transfer():
    import torch

    rng = np.random.default_rng(3)
    deep = rng.integers(0, 65536, (6, 8, 3)).astype(np.uint16)
    tensor = images.to_tensor(deep)
    assert tensor.dtype == torch.float32 and float(tensor.max()) <= 1.0
    assert np.array_equal(images.to_pixels(tensor, 16), deep)  # 65535 levels survive the round trip
    eight = (deep // 257).astype(np.uint8)
    both = images.transfer_colors(deep, deep[::-1].copy()), images.transfer_colors(eight, eight[::-1].copy())
    assert both[0].dtype == np.uint16
    assert np.abs(both[0] / 257 - both[1]).max() <= 5  # the 8-bit path rounds YCbCr twice to 8 bits
