"""8-bit pictures: the one quantisation of float images that thumbnails, transport and reports share.

numpy only, imported when a picture is made.
"""

from __future__ import annotations

from typing import Any


def to_uint8(images: Any) -> Any:
    """Floats in [0, 1], any shape, -> uint8 (NaN as 0, clipped, rounded half up); uint8 stays as it is."""
    import numpy as np

    data = np.asarray(images)
    if data.dtype == np.uint8:
        return data
    return (np.clip(np.nan_to_num(data, nan=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
