"""The weights' identity keys a history (#30 item 7): a history recorded on other weights of the same name is
not compared (strict mode fails it), and saving starts a fresh series."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_diffaccel import history
from pytest_diffaccel.measure import Call
from pytest_diffaccel.models import ModelInfo, identity, model_info
from pytest_diffaccel.session import DiffaccelSession


def test_a_local_folder_is_identified_by_its_weight_files(tmp_path):
    unet = tmp_path / "unet"
    unet.mkdir()
    weights = unet / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"header" + bytes(300_000))
    (tmp_path / "model_index.json").write_text("{}")
    first = identity.folder_digest(tmp_path)
    assert first and first == identity.folder_digest(tmp_path)
    (tmp_path / "README.md").write_text("not weights")
    assert identity.folder_digest(tmp_path) == first  # only the weights count
    weights.write_bytes(b"header" + bytes(299_999) + b"\x01")  # one byte at its end: re-saved weights
    assert identity.folder_digest(tmp_path) != first
    assert identity.folder_digest(tmp_path / "unet" / "nothing") is None


def test_a_preset_is_identified_by_its_recorded_digest_and_a_hub_id_by_its_cached_revision(tmp_path, monkeypatch):
    training = json.loads((Path(identity.__file__).parent / "presets" / "TRAINING.json").read_text())
    assert identity.weights_identity(model_info("tiny-sd")) == f"preset {training['sha256_16']['tiny-sd']}"
    assert identity.weights_identity(model_info("sd15-arch")) == "random weights"
    # a hub model in the Hugging Face cache: the snapshot's commit that a load without a revision reads
    snapshot = tmp_path / "models--org--model" / "snapshots" / ("ab12" * 10)
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    (tmp_path / "models--org--model" / "refs").mkdir()
    (tmp_path / "models--org--model" / "refs" / "main").write_text("ab12" * 10)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    hub = ModelInfo(name="org/model", kind="hub", family=None)
    assert identity.weights_identity(hub) == "hub revision ab12ab12ab12"
    assert identity.weights_identity(ModelInfo(name="org/absent", kind="hub", family=None)) is None


def _session(entry: dict, weights: str | None) -> SimpleNamespace:
    info = ModelInfo(name="tiny-sd", kind="preset", family="unet")
    return SimpleNamespace(
        baseline_entries=lambda: {"t": entry},
        no_baseline_note=lambda: "no baseline",
        info=info,
        weights=lambda: weights,
    )


@pytest.mark.parametrize(("stored", "now", "compared"), [("preset a", "preset a", True), (None, "preset a", True),
                                                          ("preset a", "preset b", False)])  # fmt: skip
def test_a_history_on_other_weights_is_not_compared_and_starts_a_fresh_series(stored, now, compared):
    call = Call(prompts=("a",))
    entry = {"call": call.describe(), "model": "tiny-sd", "weights": stored}
    found, note = DiffaccelSession.baseline_for(_session(entry, now), "t", call)  # type: ignore[arg-type]
    assert (found is not None) == compared
    if not compared:
        assert note == "baseline recorded on other weights (preset a; now preset b): not compared"
    fields = {"call": call.describe(), "model": "tiny-sd", "weights": now}
    assert history.same_series(entry, fields) == compared
