"""Still images: load (untrusted input), resize, tensor conversion, colour transfer, save.

Pillow's decompression-bomb limit stays on. Every save is atomic.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .files import atomic_path, check_writable_output

SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                ".tif": "TIFF", ".tiff": "TIFF"}


def load_image(path) -> np.ndarray:
    """An RGB ``(H, W, 3)`` uint8 array, or :class:`InputError` saying why not."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
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


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 → ``(1, 3, H, W)`` float32 in [0, 1]."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div(255).contiguous()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in [0, 1] (clamped) → ``(H, W, 3)`` uint8, rounded."""
    pixels = image.detach()[0].float().clamp(0, 1).mul(255).round().byte()
    return pixels.permute(1, 2, 0).cpu().numpy()


def transfer_colors(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Keep ``content``'s colours: luminance from ``stylized``, chroma from ``content``
    (Gatys et al. 2016, "Preserving color in neural artistic style transfer")."""
    styled_y = np.asarray(Image.fromarray(stylized).convert("YCbCr"))[..., :1]
    content_ycc = np.asarray(Image.fromarray(resize(content, stylized.shape[1], stylized.shape[0])).convert("YCbCr"))
    merged = np.concatenate([styled_y, content_ycc[..., 1:]], axis=2)
    return np.asarray(Image.fromarray(merged, "YCbCr").convert("RGB"))


def check_image_output(path, inputs=()) -> Path:
    path = check_writable_output(path, inputs)
    if path.suffix.lower() not in SAVE_FORMATS:
        raise InputError(f"cannot save {path}: unknown extension '{path.suffix}'. "
                         f"Use one of {', '.join(SAVE_FORMATS)}")
    return path


def save_image(image: np.ndarray, path, compress_level: int = 6) -> Path:
    """Write ``image`` atomically; the format follows the extension."""
    path = check_image_output(path)
    fmt = SAVE_FORMATS[path.suffix.lower()]
    options = {"compress_level": compress_level} if fmt == "PNG" else {"quality": 95} if fmt == "JPEG" else {}
    with atomic_path(path) as temp:
        Image.fromarray(image).save(temp, format=fmt, **options)
    return path


__all__ = ["load_image", "fit_long_edge", "resize", "resize_long_edge", "to_tensor", "to_uint8",
           "transfer_colors", "save_image", "check_image_output"]
