"""Thumbnails: a small lossless picture of a technique's output, kept beside the baselines.

A fidelity baseline must remember what the picture *was*, not only its SSIM, so that a technique
whose image moves (a scheduler setting nudged) is caught whatever its SSIM against the fp32
reference says. Each image of the first seed is reduced to at most ``SIZE`` px on its longer side
(area averaging; tiny presets are kept as they are), quantised to 8 bits and laid side by side in
one PNG (lossless). The file is named by its content (``<sha256[:16]>.png``) in
``<baselines>/thumbnails/``: a new thumbnail never overwrites one in use, the JSON that names it is
written after it (both atomically), and files no baseline names any more are removed on save.
numpy and Pillow only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .atomic import write_atomic_bytes
from .images import to_uint8

SIZE = 128
FOLDER = "thumbnails"


def reduce(images: Any) -> Any:
    """(N, H, W, 3) floats in [0, 1] -> (N, h, w, 3) uint8, each at most SIZE px on its longer side."""
    import numpy as np
    from PIL import Image

    out = []
    for image in np.asarray(images, dtype=np.float64):
        data = to_uint8(image)
        height, width = data.shape[:2]
        scale = SIZE / max(height, width)
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            data = np.asarray(Image.fromarray(data).resize(size, Image.Resampling.BOX))
        out.append(data)
    return np.stack(out)


def encode(images: Any) -> bytes:
    """The reduced images side by side, as one PNG."""
    import numpy as np
    from PIL import Image

    reduced = reduce(images)
    strip = np.concatenate(list(reduced), axis=1)
    buffer = io.BytesIO()
    Image.fromarray(strip).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def decode(data: bytes, count: int) -> Any:
    """The PNG strip back to (count, h, w, 3) floats in [0, 1]."""
    import numpy as np
    from PIL import Image

    strip = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64) / 255.0
    return np.stack(np.split(strip, count, axis=1))


def name_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16] + ".png"


def path_of(baselines: Path, name: str) -> Path:
    """The file of thumbnail ``name`` in the folder. The name comes from a baseline file anyone may edit, so
    only a content name (``<16 hex>.png``, what ``name_of`` makes) is joined onto the folder: an absolute
    path, a ``..`` or a device would read or upload a file outside it. BaselineError otherwise."""
    from .validate import BaselineError, Invalid, thumbnail

    try:
        return baselines / FOLDER / thumbnail(name)
    except Invalid as error:
        raise BaselineError(
            f"baseline folder {baselines}: {error}; a baseline file names it: fix or restore that file"
        ) from None


def read_bytes(baselines: Path, name: str) -> bytes | None:
    """The bytes of thumbnail ``name``, None when it is missing, unreadable, or not a plain file of the folder
    (a committed symlink named like a thumbnail could point at any file of the machine)."""
    import stat

    path = path_of(baselines, name)
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        return path.read_bytes()
    except OSError:
        return None


def read(baselines: Path, name: str, count: int) -> Any | None:
    """A stored thumbnail as images, or None when the file is missing or unreadable (a name that is not a
    content name is a BaselineError: path_of)."""
    data = read_bytes(baselines, name)
    if data is None:
        return None
    try:
        return decode(data, count)
    except Exception:
        return None


def write(baselines: Path, data: bytes) -> str:
    """Store ``data`` under its content name (atomically; an existing file is the same bytes); its name."""
    name = name_of(data)
    target = path_of(baselines, name)
    if not target.exists():
        write_atomic_bytes(target, data)
    return name


def collect(baselines: Path, referenced: Iterable[str]) -> list[str]:
    """Remove thumbnails no baseline file names any more; the names removed."""
    folder = baselines / FOLDER
    keep = set(referenced)
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    for path in folder.glob("*.png"):
        if path.name not in keep:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path.name)
    return removed
