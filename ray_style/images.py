"""Still images: load (untrusted input), resize, tensor conversion, colour transfer, save.

Pillow's decompression-bomb limit stays on. Every save is atomic.
"""
from __future__ import annotations

import io

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .files import atomic_path, check_writable_output

if TYPE_CHECKING:
    import torch

SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                ".tif": "TIFF", ".tiff": "TIFF"}


def _stretch(values: np.ndarray, top: float | None) -> np.ndarray:
    """``values`` scaled so 0…``top`` maps to 0…255 (``top`` None: their own min…max), uint8."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (0.0, top) if top is not None else (float(values.min()), float(values.max()))
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _grey_to_rgb(image: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit integer or float greyscale image with its true values kept: Pillow's own
    conversion clips everything above 255 to white."""
    values = np.asarray(image)
    if image.mode == "F":
        finite = values[np.isfinite(values)]
        inside = finite.size and finite.min() >= 0 and finite.max() <= 1
        grey = _stretch(values, 1.0 if inside else None)
    elif values.size and values.min() >= 0 and values.max() <= 65535:  # 16-bit samples (PNG, TIFF, PGM)
        grey = _stretch(values, 65535.0)
    else:
        grey = _stretch(values, None)
    return np.repeat(grey[..., None], 3, axis=2)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """Through the file's ICC profile when it has one (print CMYK is far from Pillow's formula)."""
    profile = image.info.get("icc_profile")
    if profile:
        from io import BytesIO

        from PIL import ImageCms

        try:
            return ImageCms.profileToProfile(image, ImageCms.ImageCmsProfile(BytesIO(profile)),
                                             ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    return image.convert("RGB")


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow image as RGB ``(H, W, 3)`` uint8, as it is meant to look: upright (EXIF
    orientation), transparency over white, 16-bit and float greyscale scaled, CMYK converted."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _grey_to_rgb(image)
    if image.mode == "CMYK":
        return np.asarray(_cmyk_to_rgb(image))
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def load_image(path) -> np.ndarray:
    """An RGB ``(H, W, 3)`` uint8 array (see :func:`to_rgb`) of a local path or a URL (s3://…),
    or :class:`InputError` saying why not."""
    import io

    from . import store

    place = store.location(path)
    if place.remote:
        try:
            source = io.BytesIO(store.read_bytes(place))
        except FileNotFoundError:
            raise InputError(f"image not found: {place}") from None
    else:
        source = path = Path(place.text)
        if not path.is_file():
            raise InputError(f"image not found: {path}")
    path = place
    try:
        with Image.open(source) as image:
            return to_rgb(image)
    except Image.DecompressionBombError as error:
        raise InputError(f"refusing {path}: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(f"cannot read image {path}: {error}. Use a PNG, JPEG or WebP file") from None


def fit_long_edge(width: int, height: int, size: int, multiple: int = 1) -> tuple[int, int]:
    """``(w, h)`` with the long edge ``size`` and the aspect kept, rounded to ``multiple``."""
    scale = size / max(width, height)
    w = max(multiple, round(width * scale / multiple) * multiple)
    h = max(multiple, round(height * scale / multiple) * multiple)
    return w, h


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def resize_long_edge(image: np.ndarray, size: int) -> np.ndarray:
    return resize(image, *fit_long_edge(image.shape[1], image.shape[0], size))


def to_tensor(image: np.ndarray) -> "torch.Tensor":
    """``(H, W, 3)`` uint8 (or uint16: 16-bit frames) → ``(1, 3, H, W)`` float32 in [0, 1]."""
    import torch

    top = 65535 if image.dtype == np.uint16 else 255
    pixels = np.array(image, dtype=np.int32 if image.dtype == np.uint16 else None)  # torch has no uint16 math
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div(top).contiguous()


def to_uint8(image: "torch.Tensor") -> np.ndarray:
    """``(1, 3, H, W)`` in [0, 1] (clamped) → ``(H, W, 3)`` uint8, rounded."""
    pixels = image.detach()[0].float().clamp(0, 1).mul(255).round().byte()
    return pixels.permute(1, 2, 0).cpu().numpy()


def to_pixels(image: "torch.Tensor", bits: int = 8) -> np.ndarray:
    """``(1, 3, H, W)`` in [0, 1] → ``(H, W, 3)`` uint8, or uint16 with ``bits=16``, rounded."""
    if bits == 8:
        return to_uint8(image)
    pixels = image.detach()[0].float().clamp(0, 1).mul(65535).round()  # exact integers in float32
    return pixels.permute(1, 2, 0).cpu().numpy().astype(np.uint16)


def transfer_colors(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Keep ``content``'s colours: luminance from ``stylized``, chroma from ``content``
    (Gatys et al. 2016, "Preserving color in neural artistic style transfer"). 16-bit images
    go through the same (JPEG, BT.601 full-range) YCbCr in float."""
    if stylized.dtype == np.uint16:
        return _transfer_colors_float(stylized, content)
    styled_y = np.asarray(Image.fromarray(stylized).convert("YCbCr"))[..., :1]
    content_ycc = np.asarray(Image.fromarray(resize(content, stylized.shape[1], stylized.shape[0])).convert("YCbCr"))
    merged = np.concatenate([styled_y, content_ycc[..., 1:]], axis=2)
    return np.asarray(Image.fromarray(merged, "YCbCr").convert("RGB"))


_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float64)


def _transfer_colors_float(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    from .codec import quantize, to_depth
    from .sequence import resize as resize_any

    content = to_depth(resize_any(content, stylized.shape[1], stylized.shape[0]), np.uint16)
    styled_y = stylized.astype(np.float64) @ _YCBCR[0]
    content_ycc = content.astype(np.float64) @ _YCBCR.T
    merged = np.concatenate([styled_y[..., None], content_ycc[..., 1:]], axis=2)
    return quantize(merged @ np.linalg.inv(_YCBCR).T, np.uint16)


def check_image_output(path, inputs=()) -> Path:
    path = check_writable_output(path, inputs)
    if path.suffix.lower() not in SAVE_FORMATS:
        raise InputError(f"cannot save {path}: unknown extension '{path.suffix}'. "
                         f"Use one of {', '.join(SAVE_FORMATS)}")
    return path


def save_image(image: np.ndarray, path, compress_level: int = 6, durable: bool = True) -> Path:
    """Write ``image`` atomically (and fsynced unless ``durable`` is False, see
    :func:`files.atomic_path`); the format follows the extension."""
    path = check_image_output(path)
    data = image_bytes(image, path.suffix, compress_level)
    with atomic_path(path, durable=durable) as temp:
        temp.write_bytes(data)
    return path


def image_bytes(image: np.ndarray, suffix: str, compress_level: int = 6) -> bytes:
    """``image`` encoded in the format ``suffix`` names (``.png``, ``.jpg``, …), as
    :func:`save_image` writes it."""
    fmt = SAVE_FORMATS[suffix.lower()]
    options = {"compress_level": compress_level} if fmt == "PNG" else {"quality": 95} if fmt == "JPEG" else {}
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


__all__ = ["load_image", "to_rgb", "fit_long_edge", "resize", "resize_long_edge", "to_tensor", "to_uint8", "to_pixels",
           "transfer_colors", "save_image", "image_bytes", "check_image_output"]
