"""``pytest --diffaccel-list-techniques``: every technique, what it needs, and whether it can run here."""

from __future__ import annotations

from typing import Any

from ..techniques import unmet


def list_techniques(state: Any) -> str:
    registry = state.registry
    env = state.environment()
    lines = [
        f"diffaccel techniques on {state.device} with model {state.info.label} ({env.family} denoiser)",
        "",
    ]
    width = max(len(n) for n in registry.known()) + 2
    by_family: dict[str, list[Any]] = {}
    for technique in registry.techniques.values():
        by_family.setdefault(technique.family, []).append(technique)
    for family, techniques in by_family.items():
        lines.append(f"[{family}]")
        for t in techniques:
            reasons = unmet(t.requires, env)
            status = "can run here" if not reasons else "can't run here: " + "; ".join(reasons)
            arg = {"required": "=VALUE", "optional": "[=VALUE]"}.get(t.argument, "")
            lines.append(f"  {(t.name + arg).ljust(width + 8)} {t.description}")
            lines.append(f"  {'':{width + 8}} needs {t.requires.describe()}; min SSIM {t.min_ssim:g}; {status}")
        lines.append("")
    lines.append("[presets]")
    for name, (spec, description) in registry.presets.items():
        parsed = registry.parse(name)
        reasons = unmet(parsed.requirements, env)
        status = "can run here" if not reasons else "can't run here: " + "; ".join(reasons)
        lines.append(f"  {name.ljust(width + 8)} = {spec}")
        lines.append(f"  {'':{width + 8}} {description}; {status}")
    return "\n".join(lines)
