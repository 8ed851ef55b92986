"""Which weights a history was recorded on: part of what keys it, beside the call and the model's name.

A history recorded on other weights of the same name (a hub model's new revision, a local folder whose
files were replaced, a preset retrained) is another series: judged against it, a changed picture and a
changed speed would read as a regression or pass for the wrong reason. The identity is cheap to take on
every run:

- a bundled preset: the digest of its tensors recorded in ``presets/TRAINING.json`` (scripts/train_tiny.py);
- a local folder: a digest of each weight file's name, size and first and last 64 KiB (a safetensors
  file's header names every tensor with its dtype, shape and offsets; the ends catch a re-saved file),
  not a hash of gigabytes;
- a hub id: the revision (commit) of the snapshot in the Hugging Face cache that ``from_pretrained`` reads;
- an architecture preset: its random weights, built from a fixed seed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import ModelInfo

EDGE = 64 * 1024
WEIGHT_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def folder_digest(folder: Path, allow_pickle: bool = False) -> str | None:
    """A digest of the weight files under ``folder``: names, sizes, first and last 64 KiB of each."""
    suffixes = WEIGHT_SUFFIXES + (PICKLE_SUFFIXES if allow_pickle else ())
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in suffixes)
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder).as_posix()}\0{size}\0".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(EDGE))
            if size > 2 * EDGE:
                handle.seek(size - EDGE)
                digest.update(handle.read(EDGE))
    return digest.hexdigest()[:16]


def preset_digest(name: str) -> str | None:
    """The recorded digest of a bundled preset's tensors (TRAINING.json's ``sha256_16``)."""
    training = Path(__file__).parent / "presets" / "TRAINING.json"
    try:
        digests = json.loads(training.read_text()).get("sha256_16", {})
    except (OSError, ValueError):
        return None
    found = digests.get(name) if isinstance(digests, dict) else None
    return str(found) if found else None


def hub_revision(repo_id: str) -> str | None:
    """The commit of the cached snapshot of ``repo_id`` that a load without a revision reads."""
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached, no hub library: nothing to identify it by
        return None
    return Path(path).name[:12] or None


def weights_identity(info: ModelInfo, allow_pickle: bool = False) -> str | None:
    """'preset 637de42c29ffb26c', 'folder 1a2b...', 'hub revision 0123abcd4567', 'random weights', or None."""
    if info.kind == "arch" or info.random_weights:
        return "random weights"
    if info.kind == "preset":
        found = preset_digest(info.name)
        if found is None and info.path is not None:
            found = folder_digest(info.path, allow_pickle)
        return f"preset {found}" if found else None
    if info.kind == "folder" and info.path is not None:
        found = folder_digest(info.path, allow_pickle)
        return f"folder {found}" if found else None
    if info.kind == "hub":
        found = hub_revision(info.name)
        return f"hub revision {found}" if found else None
    return None
