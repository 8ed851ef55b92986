"""Hooks that projects implement to extend pytest-diffaccel (registered with ``pytest_addhooks``)."""

from __future__ import annotations

from typing import Any


def pytest_diffaccel_register_techniques(register: Any) -> None:
    """Register project techniques. ``register`` is ``Registry.register``::

        def pytest_diffaccel_register_techniques(register):
            @register("my-attn", min_ssim=0.98)
            def apply(pipe):
                pipe.unet.set_attn_processor(MyProcessor())
                return pipe

    Keyword arguments: ``min_ssim``, ``cuda``, ``min_capability``, ``packages``, ``families``,
    ``description``, ``exclusive``, ``conflicts``, ``argument``. A registered technique composes
    with the built-in ones (``bf16+my-attn``).
    """
