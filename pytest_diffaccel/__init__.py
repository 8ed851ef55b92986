"""pytest-diffaccel: acceleration techniques of diffusers as a regression test matrix.

A test fails when an accelerated pipeline got slower than its stored baseline, or when its
image drifted from the fp32 reference (SSIM) even though it got faster.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
