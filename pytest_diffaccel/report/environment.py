"""What the run's environment is and which history judges it: lines for the terminal, the HTML and the JSON."""

from __future__ import annotations

from typing import Any


def environment_lines(state: Any) -> list[str]:
    """'environment 1a2b3c4d: Intel(R) Xeon(R) ... ; 2 cores; torch 2.13.0+cpu', then the baseline file it
    reads, or the one line on why the files of its machine key can't judge it."""
    from ..fingerprint import describe_hardware

    fingerprint = state.fingerprint()
    software = fingerprint["software"]
    lines = [
        f"environment {fingerprint['hash']}: {describe_hardware(fingerprint['hardware'])}; "
        f"torch {software.get('torch')} ({software.get('torch cpu capability') or '-'}, "
        f"{software.get('torch threads')} threads)"
    ]
    located = state.located
    lines += list(getattr(located, "notes", ()))  # histories skipped as unreadable, runs out of clock order
    if located.matched:
        lines.append(f"baselines: {located.path} (this environment, {len(located.entries)} tests)")
        return lines
    mismatch = located.mismatch()
    if mismatch:
        lines.append(
            f"no baseline for this environment: {mismatch}. Each test is judged 'no baseline for this environment'; "
            f"record this one with `{state.record_command()}`"
        )
    elif not state.settings.save:
        lines.append(f"no baseline for {state.machine} in {state.store.location} yet")
    return lines


def as_dict(state: Any) -> dict[str, Any]:
    """The fingerprint and the baseline file, for the JSON report."""
    located = state.located
    return {
        **state.fingerprint(),
        "baseline_file": str(located.path),
        "baseline_matched": located.matched,
        "mismatch": located.mismatch(),
        "notes": list(getattr(located, "notes", ())),
    }
