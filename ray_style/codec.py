"""Bytes ↔ arrays for everything a job stores: PNG frames, flow files, digests.

Pure functions, no files and no locks: the driver, the workers and the report all encode and
decode through here, so a frame has the same bytes wherever it was made.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
import zlib

import numpy as np


def digest(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def fingerprint(value) -> str:
    """A short stable hash of a JSON-able value (sorted keys)."""
    return digest(json.dumps(value, sort_keys=True).encode())[:16]


def png_bytes(image: np.ndarray) -> bytes:
    """The PNG a job stores for ``image`` ``(H, W, 3)`` uint8 (compression 1: fast;
    deterministic for a Pillow version), or uint16: a 16-bit PNG (OpenCV's; Pillow has no
    16-bit RGB)."""
    from PIL import Image

    if image.dtype == np.uint16:
        import cv2

        ok, data = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise ValueError("OpenCV could not encode a 16-bit PNG")
        return data.tobytes()

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """``(H, W, 3)`` uint8 from PNG bytes; uint16 from a 16-bit PNG (its IHDR says so)."""
    from PIL import Image

    if len(data) > 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[24] == 16:
        import cv2

        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is None or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError("not a 16-bit RGB PNG this job wrote")
        return np.ascontiguousarray(pixels[:, :, ::-1])

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


THUMB_WIDTH = 240  # px: a 1080p frame's thumbnail stays a few kB of JPEG


def thumbnail(image: np.ndarray, max_width: int = THUMB_WIDTH) -> np.ndarray:
    """``(H, W, 3)`` uint8 → at most ``max_width`` wide, aspect kept (box filter: cheap)."""
    from PIL import Image

    height, width = image.shape[:2]
    if width <= max_width:
        return image
    size = (max_width, max(1, round(height * max_width / width)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


def jpeg_bytes(image: np.ndarray, quality: int = 85) -> bytes:
    """A JPEG of ``image``; 4:4:4 chroma, so a painted texture keeps its colours (4:2:0 smears
    them ~50 % more)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def flow_bytes(field: np.ndarray, mask: np.ndarray) -> bytes:
    """A flow file: an ``.npz`` of the flow ``(H, W, 2)`` as float16 ``back`` and its
    reliability ``mask`` ``(H, W)`` in [0, 1] as uint8 (255 = reliable)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, back=field.astype(np.float16), mask=(np.asarray(mask) * 255).round().astype(np.uint8))
    return buffer.getvalue()


def load_flow(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``(flow (H, W, 2) float32, mask (H, W) float32 in [0, 1])`` from a flow file's bytes.
    Damage raises ValueError, KeyError or zipfile.BadZipFile."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            back, mask = _npy_array(archive.read("back.npy")), _npy_array(archive.read("mask.npy"))
    except zlib.error as error:
        raise ValueError(f"damaged compressed data ({error})") from None
    if back.ndim != 3 or back.shape[2] != 2 or mask.shape != back.shape[:2]:
        raise ValueError(f"a flow of shape {back.shape} with a mask of shape {mask.shape}")
    return back.astype(np.float32), mask.astype(np.float32) / 255


def blend(images: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """A seam's cross-fade: ``Σ wᵢ imageᵢ`` in float32, rounded to the images' depth (one image: itself)."""
    if len(images) == 1:
        return images[0]
    mixed = sum(weight * image.astype(np.float32) for image, weight in zip(images, weights))
    return quantize(mixed, images[0].dtype)


FLOW_DAMAGE = (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile)  # what load_flow raises on damage

_NPY_HEADER = re.compile(r"\{'descr': '([<>|]?[a-z]\d+)', 'fortran_order': False, "
                         r"'shape': \((\d+(?:, \d+)*),?\), \} *\n")


def quantize(values: np.ndarray, dtype) -> np.ndarray:
    """Float pixel values rounded and clipped into an integer image type (uint8 or uint16)."""
    return np.clip(np.rint(values), 0, np.iinfo(dtype).max).astype(dtype)


def to_depth(image: np.ndarray, dtype) -> np.ndarray:
    """``image`` as uint8 or uint16 pixels (8 → 16 bits is exact: × 257)."""
    dtype = np.dtype(dtype)
    if image.dtype == dtype:
        return image
    if dtype == np.uint16:
        return image.astype(np.uint16) * 257
    return quantize(image.astype(np.float32) / 257, np.uint8)


def _npy_array(data: bytes) -> np.ndarray:
    """The array of an ``.npy`` file as numpy writes one (C order, a plain dtype), read without
    numpy's header parser. That parser calls ``ast.literal_eval``, and CPython before 3.11.8
    raises "SystemError: AST constructor recursion depth mismatch" when two threads build ASTs
    at once (gh-106905); flows are read by a thread per core."""
    if data[:6] != b"\x93NUMPY" or len(data) < 12:
        raise ValueError("not an .npy array")
    length, start = (int.from_bytes(data[8:10], "little"), 10) if data[6] == 1 else \
        (int.from_bytes(data[8:12], "little"), 12)
    match = _NPY_HEADER.fullmatch(data[start:start + length].decode("latin-1"))
    if match is None:
        raise ValueError(f"unexpected .npy header {data[start:start + length][:80]!r}")
    shape = tuple(int(n) for n in match.group(2).split(", "))
    return np.frombuffer(data, np.dtype(match.group(1)), int(np.prod(shape)), start + length).reshape(shape)


__all__ = ["digest", "fingerprint", "png_bytes", "decode_png", "quantize", "to_depth", "flow_bytes", "load_flow",
           "blend", "thumbnail", "jpeg_bytes", "THUMB_WIDTH", "FLOW_DAMAGE"]
