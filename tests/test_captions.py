"""The caption gate: a technique whose picture stops showing its caption fails, naming the caption it
lost, even above its SSIM floor; a clean technique, and a caption the preset itself can't draw, pass."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from pytest_diffaccel import captions, mutations, verdict
from pytest_diffaccel.config import Settings
from pytest_diffaccel.models import PRESETS, model_info, tiny
from pytest_diffaccel.parsers import parse_gates
from pytest_diffaccel.session import DiffaccelSession
from pytest_diffaccel.techniques import builtin_registry

RED_CIRCLE = tiny.caption("circle", "red", "white")
BLUE_TRIANGLE = tiny.caption("triangle", "blue", "gray")


def pictures(*samples: tiny.Sample) -> np.ndarray:
    return np.stack([tiny.render(s) for s in samples])


def sample(text: str, **changes: str) -> tiny.Sample:
    parsed = tiny.parse_caption(text)
    assert parsed is not None
    return dataclasses.replace(parsed, **changes)


def test_parse_caption_reads_the_data_sets_captions_only():
    parsed = tiny.parse_caption("A  Red circle on a white BACKGROUND")
    assert (parsed.shape, parsed.colour, parsed.background) == ("circle", "red", "white")
    assert all(tiny.parse_caption(s.caption) == s for s in tiny.caption_samples(all_shapes=True))
    negatives = ("a cat", "a pink circle on a white background", "a red circle on a red", "", "red circle")
    for text in (*negatives, "a red circle in the white background", "the red circle on a white background"):
        assert tiny.parse_caption(text) is None, text


def test_the_same_pictures_keep_every_caption():
    reference = pictures(sample(RED_CIRCLE), sample(BLUE_TRIANGLE))
    check = captions.check([RED_CIRCLE, BLUE_TRIANGLE], [(0, reference.copy(), reference), (1, reference, reference)])
    assert check == captions.CaptionCheck(checked=4, total=4)
    assert not check.failed and check.judged
    assert check.describe() == "4 of 4 pictures show their caption, as the fp32 reference does"


def test_a_picture_of_another_colour_loses_its_caption_and_names_it():
    reference = pictures(sample(RED_CIRCLE), sample(BLUE_TRIANGLE))
    technique = pictures(sample(RED_CIRCLE, colour="green"), sample(BLUE_TRIANGLE))
    check = captions.check([RED_CIRCLE, BLUE_TRIANGLE], [(0, technique, reference)])
    assert check.failed and check.checked == 2
    assert check.lost == (captions.Lost(RED_CIRCLE, 0, "green on white", "red on white"),)
    assert check.describe() == (
        f"lost the caption in 1 of 2 pictures: '{RED_CIRCLE}' (seed 0) drawn green on white, "
        "the fp32 reference red on white"
    )


def test_a_shape_grown_into_a_background_is_named_by_its_size():
    reference = pictures(sample(RED_CIRCLE))
    technique = pictures(sample(RED_CIRCLE, background="cyan"))
    technique[0, 4:-4, 4:-4] = np.array(tiny.COLOURS["red"]) / 255.0  # the shape fills the picture but its frame
    check = captions.check([RED_CIRCLE], [(3, technique, reference)])
    assert check.failed
    assert check.lost[0].drawn.startswith("red on cyan (the shape covers 77% of the picture)")


def test_a_caption_the_reference_misses_is_not_judged():
    reference = pictures(sample(RED_CIRCLE, colour="green"), sample(BLUE_TRIANGLE))
    technique = pictures(sample(RED_CIRCLE, colour="yellow"), sample(BLUE_TRIANGLE))
    check = captions.check([RED_CIRCLE, BLUE_TRIANGLE], [(0, technique, reference)])
    assert (check.checked, check.total, check.failed) == (1, 2, False)
    assert "(1 the fp32 reference misses, not judged)" in check.describe()
    none = captions.check([RED_CIRCLE], [(0, technique[:1], reference[:1])])
    assert not none.judged and "not judged" in none.describe()


def test_prompts_that_are_no_captions_give_no_gate_and_batches_map_to_their_prompt():
    reference = pictures(sample(RED_CIRCLE), sample(RED_CIRCLE), sample(BLUE_TRIANGLE), sample(BLUE_TRIANGLE))
    assert captions.check(["a photo of a cat", "a dog"], [(0, reference, reference)]) is None
    technique = reference.copy()
    technique[3] = tiny.render(sample(BLUE_TRIANGLE, background="black"))
    check = captions.check(["a photo of a cat", BLUE_TRIANGLE], [(0, technique, reference)])
    assert (check.checked, check.total) == (2, 2)  # two images per prompt; the cat's are not read
    assert [item.prompt for item in check.lost] == [BLUE_TRIANGLE]


def inputs(**changes: object) -> verdict.Inputs:
    fields: dict[str, object] = {"broken": None, "ssim": 0.97, "psnr": 30.0, "min_ssim": 0.5, **changes}
    return verdict.Inputs(**fields)  # type: ignore[arg-type]


def test_the_caption_gate_fails_above_the_ssim_floor_and_can_be_reported_only():
    lost = captions.CaptionCheck(2, 2, (captions.Lost(RED_CIRCLE, 0, "green on white", "red on white"),))
    decided = verdict.decide(inputs(captions=lost))
    assert decided.headline == "FAIL caption"
    assert decided.message().startswith("caption gate failed: lost the caption in 1 of 2 pictures")
    assert next(g for g in decided.gates if g.name == "fidelity").passed
    assert parse_gates("caption", "--diffaccel-report-only") == ("caption",)
    reported = verdict.decide(inputs(captions=lost, report_only=("caption",)))
    assert not reported.failed and reported.reported == ("caption",)
    kept = verdict.decide(inputs(captions=captions.CaptionCheck(2, 2)))
    assert not kept.failed and [g.name for g in kept.gates].count("caption") == 1
    assert "caption" not in [g.name for g in verdict.decide(inputs()).gates]  # not a captioned preset
    broken = verdict.decide(inputs(captions=lost, broken="NaN"))
    assert "caption" not in [g.name for g in broken.gates]  # a broken picture is the broken gate's


def test_only_the_bundled_presets_draw_captions():
    assert all(PRESETS[name].draws_captions for name in ("tiny-sd", "tiny-sdxl", "tiny-flux"))
    assert not model_info("sd15-arch").draws_captions


# ----------------------------------------------------------------------------- end to end through pytester

LOSERS = """
from pytest_diffaccel import mutations


def pytest_diffaccel_register_techniques(register):
    register("swapped-words", min_ssim=0.0)(mutations.swap_caption_words)
    register("no-cross-attention", min_ssim=0.0)(mutations.zero_cross_attention)
"""


def test_a_technique_that_loses_its_caption_fails_even_above_its_ssim_floor(user_suite, run_inner, untimed, tmp_path):
    """Swapping two words of the prompt, or zeroing the UNet's cross-attention, keeps an SSIM above a
    floor of 0 and loses the caption: the caption gate fails them, names the caption, and neither
    becomes a baseline; fp32 and sdpa-math keep every caption the reference draws."""
    user_suite.makeconftest(LOSERS)
    report = tmp_path / "report.json"
    result = run_inner(
        "--diffaccel-techniques=fp32,sdpa-math,swapped-words,no-cross-attention",
        f"--diffaccel-steps={PRESETS['tiny-sd'].steps}",  # the preset's default call: the one that draws its captions
        "--diffaccel-fidelity-seeds=2",
        f"--diffaccel-json={report}",
        f"--diffaccel-baselines={tmp_path / 'b'}",
        "--diffaccel-save=all",
        untimed,
    )
    gates = {
        r["extra_info"]["technique"]: {g["gate"]: g for g in r["extra_info"]["gates"]}
        for r in json.loads(report.read_text())["benchmarks"]
    }
    for clean in ("fp32", "sdpa-math"):
        assert gates[clean]["caption"]["passed"] and gates[clean]["caption"]["judged"], gates[clean]["caption"]
    for loser in ("swapped-words", "no-cross-attention"):
        assert not gates[loser]["caption"]["passed"], gates[loser]["caption"]
        assert gates[loser]["fidelity"]["passed"]  # min_ssim 0: only the caption gate sees it
    result.assert_outcomes(passed=2, failed=2)
    saved = json.loads(next((tmp_path / "b").glob("*.json")).read_text())["entries"]
    assert sorted(saved) == [f"test_speed.py::test_acceleration[{t}]" for t in ("fp32", "sdpa-math")]  # never a loser
    result.stdout.fnmatch_lines(
        ["*caption gate failed: lost the caption in * of * pictures: '*' (seed *) drawn *, the fp32 reference *"]
    )


def test_a_call_with_fewer_steps_than_the_preset_is_not_judged():
    assert captions.too_few_steps(8, 8) == "" and captions.too_few_steps(None, 8) == ""
    assert captions.too_few_steps(30, 8) == ""
    why = captions.too_few_steps(2, 8)
    assert why == "the presets draw their captions at 8 steps or more; this call takes 2"
    unjudged = captions.CaptionCheck(0, 4, unjudged=why)
    assert not unjudged.judged and not unjudged.failed and unjudged.describe() == f"not judged: {why}"


def test_a_technique_judged_as_a_code_path_is_not_judged_by_its_captions():
    """vae-tiling on a tiny preset: its floor (floors.json) accepts any picture that is not broken, so its
    captions are not judged either; the same lost picture fails fp32's caption gate."""
    assert captions.code_path_only({"fp32": 0.998, "tiny-vae": 0.673}) == ""
    assert captions.code_path_only({"compile": 0.998, "vae-tiling": 0.05}) == (
        "vae-tiling (SSIM floor 0.05): a code-path check on this model, "
        "whose floor accepts any picture that is not broken"
    )
    settings = Settings(model="tiny-sd", prompt=(RED_CIRCLE,))
    session = DiffaccelSession(settings, builtin_registry())
    call = session.call_for(settings)
    lost = [(0, pictures(sample(RED_CIRCLE, colour="green")), pictures(sample(RED_CIRCLE)))]
    tiled = session.caption_check(call, lost, session.registry.parse("compile+vae-tiling"))
    assert (tiled.total, tiled.judged, tiled.failed) == (1, False, False)
    assert tiled.unjudged.startswith("vae-tiling (SSIM floor 0.05)"), tiled.unjudged
    assert session.caption_check(call, lost, session.registry.parse("fp32")).failed


def test_the_word_swap_mutation_swaps_a_captions_colour_and_background_only():
    seen: list[list[str]] = []
    pipe = type("Pipe", (), {"encode_prompt": staticmethod(lambda texts, *a, **k: seen.append(texts))})()
    mutations.swap_caption_words(pipe).encode_prompt([RED_CIRCLE, "an astronaut"], 1, guidance=True)
    assert seen == [["a white circle on a red background", "an astronaut"]]
