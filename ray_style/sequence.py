"""Numbered image sequences, the way studios exchange shots: ``shot_%04d.png``, ``shot.####.exr``
or a folder of numbered frames, in and out.

Formats: PNG (8 or 16 bits per channel), TIFF (8/16-bit integer or float, through tifffile) and
OpenEXR (half or float, through the OpenEXR library). Pixels enter the optimizer as floats in
[0, 1] whatever their depth; a 16-bit frame keeps 65535 levels through the job (its frames are
stored as 16-bit PNGs) and is written back at 16 bits.

Colour: PNG and TIFF pixels are taken as display-referred sRGB / Rec.709 values, like video and
the artwork, and written back as they are. OpenEXR holds scene-linear light, which the network
(trained on sRGB photos) must not see as such: an EXR frame is encoded with the sRGB transfer
function on reading (values clipped to [0, 1]) and decoded back to linear on writing, so an
EXR shot comes back linear, in the same space as it came.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import atomic_path, check_writable_output

SUFFIXES = (".png", ".tif", ".tiff", ".exr")
_PRINTF = re.compile(r"%(0?)(\d*)d")
_HASHES = re.compile(r"#+")


def is_pattern(text) -> bool:
    """Whether ``text`` names frames by number (``%04d``, ``%d`` or ``####``) with an image suffix."""
    name = str(text).replace("\\", "/").rsplit("/", 1)[-1]
    return bool(_PRINTF.search(name) or _HASHES.search(name)) and Path(name).suffix.lower() in SUFFIXES


def is_sequence(text) -> bool:
    """A pattern, or a local folder (of numbered frames)."""
    return is_pattern(text) or ("://" not in str(text) and Path(text).is_dir())


def stem(pattern) -> str:
    """A pattern's name without its number and suffix: ``shot_%04d.exr`` → ``shot``."""
    name = Path(_printf(str(pattern))).stem
    return _PRINTF.sub("", name).strip("_.- ")


def _printf(pattern: str) -> str:
    """``####`` → ``%04d``: one spelling from here on."""
    return _HASHES.sub(lambda m: f"%0{len(m.group())}d", pattern)


@dataclass(frozen=True)
class Frames:
    """A sequence on disk: frame ``numbers[i]`` is ``pattern % numbers[i]``."""

    pattern: str
    numbers: tuple[int, ...]

    def path(self, number: int) -> str:
        return self.pattern % number

    @property
    def suffix(self) -> str:
        return Path(self.pattern).suffix.lower()


def _listing(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        raise InputError(f"no folder {folder} for the frames") from None
    except NotADirectoryError:
        raise InputError(f"{folder} is not a folder") from None


def _numbers_of(folder: Path, prefix: str, suffix: str, width: int | None) -> dict[int, list[str]]:
    """``{number: [file names]}`` of the files ``prefix<digits>suffix`` in ``folder``."""
    shape = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
    found: dict[int, list[str]] = {}
    for name in _listing(folder):
        match = shape.match(name)
        if match and (width is None or len(match.group(1)) >= width) and (folder / name).is_file():
            found.setdefault(int(match.group(1)), []).append(name)
    return found


def _checked(found: dict[int, list[str]], where: str) -> tuple[int, ...]:
    if not found:
        raise InputError(f"no frames match {where}")
    doubled = next(((number, names) for number, names in sorted(found.items()) if len(names) > 1), None)
    if doubled:
        raise InputError(f"{where}: frame {doubled[0]} is there twice ({', '.join(sorted(doubled[1]))}): keep one "
                         "name per number")
    numbers = sorted(found)
    missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(f"{where}: frames {numbers[0]}…{numbers[-1]} miss {shown}; render or copy them first, "
                         "or give the part without the gap")
    return tuple(numbers)


def find(text) -> Frames:
    """The sequence a pattern or folder names, every number once and none missing, else
    :class:`InputError` before any work."""
    text = str(text)
    if is_pattern(text):
        pattern = _printf(text)
        folder, name = Path(pattern).parent, Path(pattern).name
        match = _PRINTF.search(name)
        width = int(match.group(2)) if match.group(1) and match.group(2) else None
        found = _numbers_of(folder, name[:match.start()], name[match.end():], width)
        if width is not None:  # %04d names 0007 and 12345, not 007
            found = {n: [x for x in names if x == Path(pattern % n).name] for n, names in found.items()}
            found = {n: names for n, names in found.items() if names}
        return Frames(str(folder.absolute() / name), _checked(found, text))
    folder = Path(text)
    groups: dict[tuple[str, str], dict[int, list[str]]] = {}
    for name in _listing(folder):
        match = re.match(r"^(.*?)(\d+)(\.[A-Za-z]+)$", name)
        if match and match.group(3).lower() in SUFFIXES:
            groups.setdefault((match.group(1), match.group(3)), {}).setdefault(int(match.group(2)), []).append(name)
    if not groups:
        raise InputError(f"{folder} holds no numbered frames ({', '.join(SUFFIXES)})")
    if len(groups) > 1:
        shown = ", ".join(f"{prefix}N{suffix}" for prefix, suffix in sorted(groups)[:4])
        raise InputError(f"{folder} holds {len(groups)} sequences ({shown}): name one with a pattern such as "
                         f"{folder / (sorted(groups)[0][0] + '%04d' + sorted(groups)[0][1])}")
    (prefix, suffix), found = next(iter(groups.items()))
    numbers = _checked(found, str(folder))
    digits = {len(names[0]) - len(prefix) - len(suffix) for names in found.values()}
    padded = len(digits) == 1 and any(names[0][len(prefix)] == "0" for names in found.values())
    number_format = f"%0{digits.pop()}d" if padded else "%d"
    return Frames(str(folder.absolute() / f"{prefix}{number_format}{suffix}"), numbers)


# ---------------------------------------------------------------- pixels
def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """Scene-linear light in [0, 1] → sRGB-encoded values (IEC 61966-2-1)."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    encoded = np.clip(encoded, 0.0, 1.0)
    return np.where(encoded <= 0.04045, encoded / 12.92, np.power((encoded + 0.055) / 1.055, 2.4))


def _rgb(pixels: np.ndarray, path) -> np.ndarray:
    """``(H, W)`` grey, ``(H, W, 3|4)`` → ``(H, W, 3)`` (alpha dropped: we render opaque frames)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"{path}: {pixels.shape} pixels are not an image we read (grey, RGB or RGBA)")
    if pixels.shape[2] in (1, 2):
        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def _to_uint16(values: np.ndarray) -> np.ndarray:
    return np.round(np.clip(values, 0.0, 1.0) * 65535).astype(np.uint16)


def _exr_rgb(path: str) -> np.ndarray:
    import OpenEXR

    with OpenEXR.File(path) as exr:
        channels = exr.channels()
        if "RGB" in channels or "RGBA" in channels:
            pixels = channels.get("RGB", channels.get("RGBA")).pixels
        elif {"R", "G", "B"} <= set(channels):
            pixels = np.stack([channels[c].pixels for c in "RGB"], axis=2)
        elif "Y" in channels:
            pixels = channels["Y"].pixels
        else:
            raise InputError(f"{path}: an EXR without R, G, B or Y channels ({', '.join(channels)})")
    return _rgb(np.asarray(pixels, dtype=np.float32), path)


def read(path) -> np.ndarray:
    """One frame as ``(H, W, 3)`` uint8 (an 8-bit file) or uint16 (anything deeper; EXR
    sRGB-encoded, see the module's docstring), or :class:`InputError`."""
    path = str(path)
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".exr":
            return _to_uint16(srgb_encode(_exr_rgb(path)))
        if suffix in (".tif", ".tiff"):
            import tifffile

            pixels = _rgb(tifffile.imread(path, key=0), path)
        else:
            import cv2

            data = np.fromfile(path, np.uint8)
            pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
            if pixels is None:
                raise InputError(f"{path} is not a PNG we can read (damaged or truncated)")
            pixels = _rgb(pixels, path)
            pixels = pixels[:, :, ::-1] if pixels.ndim == 3 else pixels  # OpenCV reads BGR
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"frame {path} is missing") from None
    except Exception as error:  # each library has its own errors for a damaged file
        raise InputError(f"{path} could not be read ({type(error).__name__}: {str(error).splitlines()[0][:120]})") \
            from None
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    if pixels.dtype == np.uint16:
        return np.ascontiguousarray(pixels)
    if np.issubdtype(pixels.dtype, np.floating):
        return _to_uint16(pixels.astype(np.float32))
    if np.issubdtype(pixels.dtype, np.integer):  # 32-bit integer TIFF: its top 16 bits
        top = np.iinfo(pixels.dtype).max
        return _to_uint16(pixels.astype(np.float64) / top)
    raise InputError(f"{path}: {pixels.dtype} pixels are not an image we read")


def header(path) -> tuple[int, int, int]:
    """``(width, height, bits)`` of a frame (bits 8 or 16), reading it once."""
    pixels = read(path)
    return pixels.shape[1], pixels.shape[0], 8 if pixels.dtype == np.uint8 else 16


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Lanczos resize at the image's own depth (Pillow's for 8-bit, as every other image here;
    OpenCV's in float for 16-bit, which Pillow cannot hold in RGB)."""
    if image.shape[:2] == (height, width):
        return image
    if image.dtype == np.uint8:
        from .images import resize as resize8

        return resize8(image, width, height)
    import cv2

    scaled = cv2.resize(image.astype(np.float32), (width, height), interpolation=cv2.INTER_LANCZOS4)
    return np.round(np.clip(scaled, 0, 65535)).astype(np.uint16)


def to_depth(image: np.ndarray, bits: int) -> np.ndarray:
    """``image`` at 8 or 16 bits per channel (8 → 16 is exact: × 257)."""
    from .codec import to_depth as converted

    return converted(image, np.uint8 if bits == 8 else np.uint16)


def _encoded(image: np.ndarray, suffix: str) -> np.ndarray | None:
    """What the file will hold, for the check after writing (EXR: half floats of linear light)."""
    if suffix == ".exr":
        return srgb_decode(to_depth(image, 16).astype(np.float32) / 65535).astype(np.float16)
    return image


def write(path, image: np.ndarray) -> Path:
    """Write one frame atomically and read it back before it replaces anything: a frame file is
    either the old one or the verified new one. 8- or 16-bit PNG and TIFF as given; EXR as half
    floats of linear light."""
    path = check_writable_output(path)
    suffix = path.suffix.lower()
    expected = _encoded(image, suffix)
    with atomic_path(path) as temp:
        if suffix == ".exr":
            import OpenEXR

            header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
            with OpenEXR.File(header, {"RGB": expected}) as exr:
                exr.write(str(temp))
            with OpenEXR.File(str(temp)) as exr:
                back = np.asarray(exr.channels()["RGB"].pixels)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(temp, image, photometric="rgb", compression="zlib")
            back = tifffile.imread(temp)
        else:
            import cv2

            ok, data = cv2.imencode(".png", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 3])
            if not ok:
                raise InputError(f"could not encode {path} as PNG")
            temp.write_bytes(data.tobytes())
            back = cv2.imdecode(np.fromfile(temp, np.uint8), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
        if back.shape != expected.shape or back.dtype != expected.dtype or not np.array_equal(back, expected):
            raise InputError(f"{path} did not read back as written; the previous file, if any, is unchanged")
    return path


def identity(frames: Frames) -> dict:
    """The sequence's files by name, size and modification time (ns), fingerprinted: a changed
    shot is a new input without hashing terabytes (each decoded frame is checksummed in the job)."""
    from .codec import fingerprint

    entries = []
    for number in frames.numbers:
        stat = os.stat(frames.path(number))
        entries.append((Path(frames.path(number)).name, stat.st_size, stat.st_mtime_ns))
    return {"pattern": frames.pattern, "numbers": [frames.numbers[0], frames.numbers[-1]],
            "files": fingerprint(entries)}


def check_output_pattern(text) -> str:
    """An output pattern we can write: ``%0Nd``/``%d``/``####`` and .png, .tif(f) or .exr."""
    if not is_pattern(text):
        raise InputError(f"output {text}: name frames with a number pattern such as shot_%04d.png "
                         f"({', '.join(SUFFIXES)})")
    if "://" in str(text):
        raise InputError(f"output {text}: an image sequence is written to a folder on this machine or a shared volume")
    return _printf(str(text))


__all__ = ["Frames", "find", "read", "write", "identity", "header", "resize", "to_depth", "is_pattern", "is_sequence",
           "check_output_pattern", "srgb_encode", "srgb_decode", "SUFFIXES"]
