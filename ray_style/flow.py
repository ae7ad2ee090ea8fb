"""Optical flow between source frames, warping, reliability masks, composition, .flo files.

Conventions: ``flow(a, b)[y, x] = (dx, dy)`` says the pixel at (x, y) in frame ``a`` is at
(x + dx, y + dy) in frame ``b``. To bring an image of frame ``b`` into frame ``a``'s
geometry, ``warp(image_b, flow(a, b))``. Masks are weights in [0, 1], 1 where the flow can
be trusted (Ruder, Dosovitskiy & Brox 2016, "Artistic style transfer for videos", sec. 3.1).

Flow a user computed elsewhere (RAFT, FlowNet, DeepFlow…) is read from a folder laid out as
artistic-videos' ``makeOptFlow.sh`` writes it: Middlebury ``.flo`` files named
``forward_{i}_{j}.flo`` (i < j) and ``backward_{j}_{i}.flo``, the flow from frame i to frame j
with 1-based frame numbers, and optional ``reliable_{i}_{j}.pgm`` masks (255 = reliable).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .settings import FLOW_METHODS
from .errors import InputError, did_you_mean
from .files import atomic_path

FLO_MAGIC = 202021.25  # "PIEH" read as a little-endian float32: Middlebury's sanity check
MAX_FLO_SIDE = 1 << 15  # larger than any video we take; a bigger header is a corrupt file
UNKNOWN_FLOW = 1e9  # Middlebury marks unknown vectors with components above this

FlowPair = tuple[np.ndarray, np.ndarray]  # ((H, W, 2) flow, (H, W) mask)
FlowProvider = Callable[[int], "FlowPair | None"]


def _grey(frame: np.ndarray) -> np.ndarray:
    import cv2

    if frame.dtype != np.uint8:  # DIS and Farnebäck take 8-bit grey; motion does not need more
        from .codec import to_depth

        frame = to_depth(frame, np.uint8)
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def check_flow_method(method: str) -> str:
    if method not in FLOW_METHODS:
        raise InputError(f"unknown flow method '{method}': use one of {', '.join(FLOW_METHODS)}."
                         f"{did_you_mean(method, FLOW_METHODS)}")
    return method


def optical_flow(frame_a: np.ndarray, frame_b: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense flow ``(H, W, 2)`` float32 from RGB ``frame_a`` to ``frame_b``.

    ``dis``: OpenCV's DIS, medium preset (fast, robust to large motion). ``farneback``:
    Farnebäck's polynomial expansion, five pyramid levels so motion of tens of pixels is
    still found, a Gaussian window for smoother fields.
    """
    import cv2

    check_flow_method(method)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return dis.calc(_grey(frame_a), _grey(frame_b), None)
    return cv2.calcOpticalFlowFarneback(_grey(frame_a), _grey(frame_b), None, pyr_scale=0.5, levels=5, winsize=15,
                                        iterations=3, poly_n=7, poly_sigma=1.5,
                                        flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN)


def _grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return grid_x + flow[..., 0], grid_y + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` at ``(x, y) + flow``: brings frame b's image into frame a's geometry.

    Works on uint8 or float ``(H, W, C)`` images; samples outside are taken from the border.
    """
    import cv2

    map_x, map_y = _grid(flow)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def inside(flow: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32: 1 where ``(x, y) + flow`` lands inside the frame, else 0."""
    height, width = flow.shape[:2]
    map_x, map_y = _grid(flow)
    return ((map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)).astype(np.float32)


def reliability(flow_ab: np.ndarray, flow_ba: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 mask for ``flow_ab``: 0 where forward-backward consistency fails
    (disocclusions) or at motion boundaries, else 1 (Ruder et al. 2016, eqs. 8-9)."""
    back = warp(flow_ba, flow_ab)  # flow b→a, sampled where each pixel of a lands in b
    summed = flow_ab + back
    inconsistent = (summed**2).sum(-1) > 0.01 * ((flow_ab**2).sum(-1) + (back**2).sum(-1)) + 0.5
    return (~(inconsistent | _motion_boundary(flow_ab))).astype(np.float32)


def _motion_boundary(flow: np.ndarray) -> np.ndarray:
    grad_y, grad_x = np.gradient(flow, axis=(0, 1))
    return (grad_x**2).sum(-1) + (grad_y**2).sum(-1) > 0.01 * (flow**2).sum(-1) + 0.002


def plausibility(flow: np.ndarray) -> np.ndarray:
    """The mask we give a flow whose reverse is unknown (no consistency check possible):
    0 at motion boundaries (Ruder's eq. 9) and where the flow leaves the frame, else 1.
    Occlusions inside the frame go undetected, so supply the reverse flow or a mask if you can."""
    return (~_motion_boundary(flow)).astype(np.float32) * inside(flow)


def reliable_flow(frame_a: np.ndarray, frame_b: np.ndarray, method: str = "dis") -> FlowPair:
    """Flow from ``frame_a`` to ``frame_b`` and its reliability mask (both directions computed)."""
    forward, backward = optical_flow(frame_a, frame_b, method), optical_flow(frame_b, frame_a, method)
    return forward, reliability(forward, backward)


def _compose_step(flow_ab: np.ndarray, mask_ab: np.ndarray, flow_bc: np.ndarray,
                  mask_bc: np.ndarray) -> FlowPair:
    import cv2

    map_x, map_y = _grid(flow_ab)
    flow_ac = flow_ab + cv2.remap(flow_bc, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    sampled = cv2.remap(mask_bc.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return flow_ac, mask_ab * sampled * inside(flow_ac)


def compose(flow_ab: np.ndarray, flow_bc: np.ndarray) -> np.ndarray:
    """Flow from a to c by chaining: ``flow_ac(x) = flow_ab(x) + flow_bc(x + flow_ab(x))``.

    ``flow_bc`` is sampled bilinearly where each pixel of a lands in b (border replicated:
    :func:`compose_reliability` gives those pixels weight 0).
    """
    return warp(flow_bc, flow_ab) + flow_ab


def compose_reliability(flow_ab: np.ndarray, mask_ab: np.ndarray, flow_bc: np.ndarray,
                        mask_bc: np.ndarray) -> np.ndarray:
    """Mask of ``compose(flow_ab, flow_bc)``: reliable only where ``mask_ab`` is and ``mask_bc``
    is at the point of b the path goes through (0 where it leaves b), and where the
    composed flow lands inside c. Weights multiply, so any hop's occlusion excludes the pixel."""
    return _compose_step(flow_ab, mask_ab, flow_bc, mask_bc)[1]


def composed_paths(flows: list[np.ndarray], masks: list[np.ndarray]) -> Iterator[FlowPair]:
    """Along adjacent ``flows[i]`` (frame i → i + 1) with their ``masks``: the flow and mask
    from the first frame to frame 1, 2, … in turn, each hop composed onto the last (so
    frame k costs one composition, not k). The first hop gets the out-of-frame test too."""
    if not flows or len(flows) != len(masks):
        raise ValueError(f"need one mask per flow and at least one flow, got {len(flows)} and {len(masks)}")
    flow, mask = flows[0], masks[0] * inside(flows[0])
    yield flow, mask
    for next_flow, next_mask in zip(flows[1:], masks[1:]):
        flow, mask = _compose_step(flow, mask, next_flow, next_mask)
        yield flow, mask


def compose_path(flows: list[np.ndarray], masks: list[np.ndarray]) -> FlowPair:
    """Flow and mask from the first frame to the last along adjacent flows (see
    :func:`composed_paths`)."""
    for path in composed_paths(flows, masks):
        pass
    return path


def long_term_masks(masks_by_offset: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Ruder et al. 2016, sec. 4.2, eq. 10: ``c_long(j) = max(c(j) − Σ_{k<j} c(k), 0)`` over the
    offsets in ascending order, so a pixel a closer frame already explains is excluded from
    the farther ones. ``{j: (H, W)} -> {j: (H, W)}``."""
    result, covered = {}, None
    for offset in sorted(masks_by_offset):
        mask = masks_by_offset[offset].astype(np.float32)
        result[offset] = mask if covered is None else np.maximum(mask - covered, 0)
        covered = mask if covered is None else covered + mask
    return result


def anchored_long_term_masks(masks_by_offset: dict[int, np.ndarray], anchor: float) -> dict[int, np.ndarray]:
    """:func:`long_term_masks`, plus ``anchor`` × a farther frame's own mask where a closer one
    already explains the pixel. ``anchor = 0`` is Ruder's eq. 10 exactly: a region that
    reappears is held to the look it had, with full weight, by the nearest frame that saw it.
    Our departure, measured (BENCHMARKS.md, temporal quality): with exclusive masks the farther
    frames only ever act where a region reappears, so a chain's slow drift of the style over
    many frames is left free; a share where the closer frame also sees the pixel anchors every
    frame to the chain's earlier ones and holds that drift back (the renderer caps the summed
    weight at 1, so the share moves the target, not the strength)."""
    exclusive, covered, result = long_term_masks(masks_by_offset), None, {}
    for offset in sorted(masks_by_offset):
        mask = masks_by_offset[offset].astype(np.float32)
        result[offset] = exclusive[offset] if covered is None else \
            exclusive[offset] + anchor * mask * np.minimum(covered, 1.0)
        covered = mask if covered is None else covered + mask
    return result


def flow_init(previous_stylized: np.ndarray, content: np.ndarray, flow_back: np.ndarray,
              mask: np.ndarray) -> np.ndarray:
    """A frame's start: the previous stylized frame warped along the flow, with the regions
    the mask distrusts (disocclusions) filled from the content frame. uint8 (or uint16) in and out."""
    from .codec import quantize

    warped = warp(previous_stylized, flow_back).astype(np.float32)
    mixed = mask[..., None] * warped + (1 - mask[..., None]) * content.astype(np.float32)
    return quantize(mixed, previous_stylized.dtype)


def warping_error(frame: np.ndarray, next_frame: np.ndarray, flow_forward: np.ndarray, mask: np.ndarray) -> float:
    """Lai et al. 2018: masked mean squared difference between ``frame`` and ``next_frame``
    warped back into it along the source's flow, pixel values in [0, 1]."""
    top = float(np.iinfo(frame.dtype).max) if np.issubdtype(frame.dtype, np.integer) else 255.0
    warped = warp(next_frame.astype(np.float32) / top, flow_forward)
    diff = ((frame.astype(np.float32) / top - warped) ** 2).sum(-1)
    return float((mask * diff).sum() / max(mask.sum(), 1.0))


# Middlebury .flo files and flow folders from other tools

def read_flo(path) -> np.ndarray:
    """A Middlebury ``.flo`` file as ``(H, W, 2)`` float32, or :class:`InputError` naming the file.

    Layout: float32 202021.25, int32 width, int32 height, then ``(dx, dy)`` float32 pairs in
    row order, all little-endian. Vectors Middlebury marks unknown (> 1e9) are kept as they are.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read flow file {path}: {error.strerror or error}") from None
    if len(data) < 12:
        raise InputError(f"{path} is not a Middlebury .flo file: {len(data)} bytes, shorter than its 12-byte header")
    magic, width, height = struct.unpack("<fii", data[:12])
    if magic != FLO_MAGIC:
        raise InputError(f"{path} is not a Middlebury .flo file: it starts with {data[:4]!r}, not b'PIEH' "
                         f"(the float {FLO_MAGIC})")
    if not (0 < width <= MAX_FLO_SIDE and 0 < height <= MAX_FLO_SIDE):
        raise InputError(f"{path}: its header says {width}×{height} px, which no frame is (1…{MAX_FLO_SIDE} a "
                         "side); the file is damaged")
    expected = 12 + width * height * 8
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "longer than its header says"
        raise InputError(f"{path}: {kind}: {len(data)} bytes where a {width}×{height} flow takes {expected}")
    return np.frombuffer(data, "<f4", count=width * height * 2, offset=12).reshape(height, width, 2).astype(np.float32)


def write_flo(path, flow: np.ndarray) -> None:
    """Write ``(H, W, 2)`` ``flow`` as a Middlebury ``.flo`` file, atomically."""
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"a flow is (H, W, 2), got {flow.shape}")
    height, width = flow.shape[:2]
    with atomic_path(path) as temp:
        with open(temp, "wb") as handle:
            handle.write(struct.pack("<fii", FLO_MAGIC, width, height))
            handle.write(np.ascontiguousarray(flow, dtype="<f4").tobytes())


def resize_flow(flow: np.ndarray, width: int, height: int) -> np.ndarray:
    """A flow resampled to ``width × height``, its vectors scaled by the same factors."""
    import cv2

    old_height, old_width = flow.shape[:2]
    if (old_width, old_height) == (width, height):
        return flow
    shrinking = width < old_width and height < old_height
    resized = cv2.resize(flow, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return resized * np.array([width / old_width, height / old_height], np.float32)


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A ``(H, W)`` mask resampled to ``width × height``, values kept in [0, 1]."""
    import cv2

    if mask.shape[:2] == (height, width):
        return mask
    return np.clip(cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR), 0, 1)


def flow_file_names(source: int, target: int) -> tuple[str, str]:
    """artistic-videos' names for the flow from 0-based frame ``source`` to ``target`` and
    its mask: e.g. (0, 1) → ``forward_1_2.flo``, ``reliable_1_2.pgm``; (1, 0) →
    ``backward_2_1.flo``, ``reliable_2_1.pgm``."""
    if source == target:
        raise ValueError("a flow joins two different frames")
    kind = "forward" if target > source else "backward"
    return f"{kind}_{source + 1}_{target + 1}.flo", f"reliable_{source + 1}_{target + 1}.pgm"


def _read_pgm_mask(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"), dtype=np.float32) / 255
    except Image.DecompressionBombError as error:
        raise InputError(f"refusing {path}: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(f"cannot read reliability mask {path}: {error}. It should be a grey PGM, 255 = reliable") \
            from None


def _known(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flow with unknown vectors (NaN, or Middlebury's > 1e9) zeroed, and where they were."""
    known = np.isfinite(flow).all(-1) & (np.abs(flow) < UNKNOWN_FLOW).all(-1)
    return np.where(known[..., None], flow, 0).astype(np.float32), known.astype(np.float32)


def read_flow_dir(folder, source: int, target: int, width: int, height: int) -> FlowPair:
    """The user's flow from 0-based frame ``source`` to ``target`` at ``width × height`` and
    its mask, from a folder named as in :func:`flow_file_names`.

    A flow of another resolution is resampled and its vectors scaled. The mask is, in order
    of preference: ``reliable_{i}_{j}.pgm`` (resized); the forward-backward check against
    the reverse flow's file, when it is there; else :func:`plausibility`. Unknown vectors
    always get weight 0. Raises :class:`InputError` naming the file it wants.
    """
    folder = Path(folder)
    flow_name, mask_name = flow_file_names(source, target)
    path = folder / flow_name
    if not path.is_file():
        raise InputError(f"no flow file {path}: --flow-dir needs artistic-videos' names (forward_I_J.flo, "
                         "backward_J_I.flo, 1-based frame numbers), one per frame pair used")
    flow, known = _known(read_flo(path))
    flow, known = resize_flow(flow, width, height), resize_mask(known, width, height)
    if (folder / mask_name).is_file():
        mask = resize_mask(_read_pgm_mask(folder / mask_name), width, height)
    elif (folder / flow_file_names(target, source)[0]).is_file():
        reverse, _ = _known(read_flo(folder / flow_file_names(target, source)[0]))
        mask = reliability(flow, resize_flow(reverse, width, height))
    else:
        mask = plausibility(flow)
    return flow, mask * (known >= 1)


def check_flow_dir(folder, frames: int, offsets, forward: bool) -> None:
    """:class:`InputError` before any work unless ``folder`` has a flow file for every pair a
    job of ``frames`` frames may read: each frame to the ones ``offsets`` before it and, when
    ``forward`` (refinement passes, the report's warping error), each frame to the next."""
    folder = Path(folder)
    names = {entry.name for entry in os.scandir(folder)} if folder.is_dir() else set()
    pairs = [(t, t - k) for k in offsets for t in range(k, frames)]
    if forward:
        pairs += [(t, t + 1) for t in range(frames - 1)]
    missing = [name for name in (flow_file_names(a, b)[0] for a, b in pairs) if name not in names]
    if missing:
        hint = "; seam refinement and the report read forward flows too (--passes 0 --no-report: backward only)" \
            if forward else ""
        raise InputError(f"--flow-dir {folder} lacks {len(missing)} of the {len(pairs)} flow files this job reads, "
                         f"e.g. {missing[0]} (artistic-videos' names: forward_I_J.flo, backward_J_I.flo, 1-based "
                         f"frame numbers){hint}")


def flow_dir_identity(folder) -> str:
    """Names, sizes and modification times (ns) of a flow folder's files: what a job's frames
    and cached flows were made from, so that changed files are never mistaken for the old."""
    from .codec import fingerprint

    folder = Path(folder)
    entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()) \
        if folder.is_dir() else []
    return fingerprint(entries)


def flow_dir_provider(folder, width: int, height: int) -> FlowProvider:
    """``t ↦`` the user's flow from frame t to t + 1 and its mask (see :func:`read_flow_dir`),
    for :func:`ray_style.evaluate.evaluate`'s ``flows``."""
    return lambda t: read_flow_dir(folder, t, t + 1, width, height)


__all__ = ["FLOW_METHODS", "check_flow_method", "optical_flow", "warp", "inside", "reliability", "plausibility",
           "reliable_flow", "compose", "compose_reliability", "composed_paths", "compose_path", "long_term_masks",
           "anchored_long_term_masks", "flow_init",
           "warping_error", "read_flo", "write_flo", "resize_flow", "resize_mask", "flow_file_names", "read_flow_dir",
           "flow_dir_provider", "flow_dir_identity", "check_flow_dir"]
