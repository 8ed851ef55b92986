"""Environment identity: a baseline judges only the hardware it was recorded on; a software change
is judged and named; strict mode for CI; 'undecided' is not a pass; many tests moving are one event;
the breakdown names only what moved. Unit tests on the pure parts, then real pytest sessions on tiny-sd
against baseline files rewritten as if another machine had recorded them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_diffaccel import baselines, breakdown, events, fingerprint, history, latency, verdict

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14 96-Core Processor
stepping\t: 1
flags\t\t: fpu sse avx avx2 fma f16c avx512f avx512bw avx512vl avx512_bf16 avx512_vnni

processor\t: 1
vendor_id\t: AuthenticAMD
"""


def hardware(isa=("avx2", "avx512_bf16", "avx512f"), cores=2, model="17"):
    cpu = {"vendor": "AuthenticAMD", "model_name": "AMD EPYC", "family": "25", "model": model, "stepping": "1"}
    return {"device": "cpu", "cpu": {**cpu, "isa": sorted(isa)}, "cores": cores}


def environment(hw):
    return {"hash": fingerprint.hardware_hash(hw), "hardware": hw, "software": {"torch": "2.13.0"}}


# ----------------------------------------------------------------------------- the fingerprint


def test_cpuinfo_gives_vendor_family_model_stepping_and_the_isa_torch_dispatches_on():
    cpu = fingerprint.parse_cpuinfo(CPUINFO)
    assert cpu == {
        "vendor": "AuthenticAMD", "model_name": "AMD EPYC 9R14 96-Core Processor", "family": "25", "model": "17",
        "stepping": "1",
        "isa": ["avx2", "avx512_bf16", "avx512_vnni", "avx512bw", "avx512f", "avx512vl", "f16c", "fma"],
    }  # fmt: skip


def test_this_machine_has_a_stable_fingerprint():
    first, again = fingerprint.probe("cpu"), fingerprint.probe("cpu")
    assert first["hash"] == again["hash"] == fingerprint.hardware_hash(first["hardware"])
    assert re.fullmatch(r"[0-9a-f]{8}", first["hash"])
    assert first["hardware"]["cores"] >= 1 and "isa" in first["hardware"]["cpu"]
    assert first["software"]["torch"] and "torch cpu capability" in first["software"]


def test_differences_say_what_the_recording_machine_lacked():
    older = hardware(isa=("avx2",), model="1")
    text = fingerprint.hardware_differences(older, hardware())
    assert text.startswith("was recorded without avx512_bf16, avx512f; this CPU has them")
    assert "CPU model 1 there, 17 here" in text
    assert "was recorded with avx512_bf16, avx512f; this CPU lacks them" in fingerprint.hardware_differences(
        hardware(), older
    )
    assert "unknown" in fingerprint.hardware_differences(None, hardware())
    assert fingerprint.hardware_hash(older) != fingerprint.hardware_hash(hardware())


def test_software_changes_are_named():
    then = {"torch": "2.12.0", "diffusers": "0.42.1", "torchao": None}
    now = {"torch": "2.13.0", "diffusers": "0.42.1", "torchao": "0.18.0", "python": "3.11.7"}
    assert fingerprint.software_changes(then, now) == ["torch 2.12.0 -> 2.13.0", "torchao absent -> 0.18.0"]
    assert fingerprint.software_changes(None, now) == []


# ----------------------------------------------------------------------------- one file per environment


def entry(ratio: float) -> dict:
    return {"samples": [1.0], "median": 1.0, "runs": [{"level": 0, "ratio": ratio}]}


def test_the_nvidia_driver_is_read_without_nvml_and_is_software_not_hardware(monkeypatch):
    proprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\nGCC ..."
    open_module = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  555.42.02  Release Build  (dvs-builder)"
    assert fingerprint.parse_driver_version(proprietary) == "550.54.15"
    assert fingerprint.parse_driver_version(open_module) == "555.42.02"
    assert fingerprint.parse_driver_version("no driver here") is None
    # a driver updated overnight: the same machine (same hardware hash), a change of stack named in the verdict
    then = {"torch": "2.13.0", "nvidia driver": "550.54.15"}
    now = {"torch": "2.13.0", "nvidia driver": "555.42.02"}
    assert fingerprint.software_changes(then, now) == ["nvidia driver 550.54.15 -> 555.42.02"]
    card = {"device": "cuda", "gpu": {"name": "H100", "capability": "9.0", "memory_gib": 79.1, "sms": 132}}
    assert "driver" not in fingerprint.describe_hardware(card)
    # a CPU run records no driver; a GPU run asks for it
    monkeypatch.setattr(fingerprint, "nvidia_driver", lambda: "550.54.15")
    assert "nvidia driver" not in fingerprint.software("cpu")
    assert fingerprint.software("cuda")["nvidia driver"] == "550.54.15"


def test_each_environment_reads_and_writes_only_its_own_file(tmp_path):
    here, there = environment(hardware()), environment(hardware(isa=("avx2",)))
    baselines.save(tmp_path / "cpu-amd-epyc.json", "cpu-amd-epyc", {"t::a": entry(1.0)}, "all", environment=there)
    first = baselines.locate(tmp_path, "cpu-amd-epyc", here)
    assert not first.matched and first.entries == {}
    assert first.path.name == f"cpu-amd-epyc-{here['hash']}.json"  # the readable name is taken: a hash beside it
    assert first.mismatch().endswith("cpu-amd-epyc.json was recorded without avx512_bf16, avx512f; this CPU has them")

    report = baselines.save(first.path, "cpu-amd-epyc", {"t::a": entry(2.0)}, "all", environment=here)
    assert report.path == first.path
    mine = baselines.locate(tmp_path, "cpu-amd-epyc", here)
    theirs = baselines.locate(tmp_path, "cpu-amd-epyc", there)
    assert mine.matched and mine.entries["t::a"]["runs"][0]["ratio"] == 2.0
    assert (
        theirs.matched and theirs.path.name == "cpu-amd-epyc.json" and theirs.entries["t::a"]["runs"][0]["ratio"] == 1
    )
    stored = json.loads(mine.path.read_text())
    assert stored["schema"] == 3 and stored["environment"]["hardware"] == here["hardware"]


def test_a_file_recorded_before_fingerprints_judges_nothing_and_is_never_written(tmp_path):
    legacy = tmp_path / "cpu-amd-epyc.json"
    legacy.write_text(json.dumps({"schema": 2, "machine": "cpu-amd-epyc", "entries": {"t::a": entry(1.0)}}))
    before = legacy.read_bytes()
    here = environment(hardware())
    located = baselines.locate(tmp_path, "cpu-amd-epyc", here)
    assert not located.matched and located.entries == {}
    assert "was recorded before environment fingerprints" in located.mismatch()
    baselines.save(located.path, "cpu-amd-epyc", {"t::a": entry(2.0)}, "all", environment=here)
    assert legacy.read_bytes() == before


def test_a_hand_edited_hash_does_not_fool_the_match(tmp_path):
    here = environment(hardware())
    baselines.save(tmp_path / "k.json", "k", {"t::a": entry(1.0)}, "all", environment=here)
    data = json.loads((tmp_path / "k.json").read_text())
    data["environment"]["hardware"]["cores"] = 64  # another machine's hardware, the same stored hash
    (tmp_path / "k.json").write_text(json.dumps(data))
    assert not baselines.locate(tmp_path, "k", here).matched


# ----------------------------------------------------------------------------- undecided, strict mode


def _spread(runs=1):
    return history.spread([[0.0] * runs], "ratio")


def test_agreeing_blocks_beyond_max_slowdown_against_one_run_are_undecided_not_passed():
    judged = latency.judge(
        [0.215, 0.197],
        [0.0],
        _spread(),
        max_slowdown=0.10,
        alpha=0.0005,  # 1.24x and 1.22x: the case
    )
    assert judged.state == "pass" and not judged.regression and judged.undecided
    assert judged.deciding_runs is not None and judged.deciding_runs > 1
    assert "undecided" in judged.reason and f"about {judged.deciding_runs} runs" in judged.reason
    inside = latency.judge([0.02, 0.01], [0.0], _spread(), max_slowdown=0.10, alpha=0.0005)
    assert not inside.undecided
    split = latency.judge([0.2, 0.0, 0.01], [0.0], _spread(), max_slowdown=0.10, alpha=0.0005)
    assert not split.undecided  # only a minority beyond max-slowdown


@pytest.mark.parametrize(
    "note",
    [
        "no baseline for cpu-test",
        "baseline recorded for another call (steps, size, prompts...): not compared",
        "baseline recorded for model tiny-flux: not compared",
        "baseline holds no compile time (recorded by an older version): re-save it",
    ],
)
def test_strict_mode_fails_every_test_not_judged_whatever_the_reason(note):
    base = {"broken": None, "ssim": 1.0, "psnr": None, "min_ssim": 0.9, "baseline_note": note}
    assert not verdict.decide(verdict.Inputs(**base)).failed
    strict = verdict.decide(verdict.Inputs(**base, require_baseline=True))
    assert [g.name for g in strict.failures] == ["baseline"] and strict.failures[0].message.startswith(note)


def test_undecided_is_its_own_word_and_strict_mode_fails_it():
    judged = latency.judge([0.215, 0.197], [0.0], _spread(), max_slowdown=0.10, alpha=0.0005)
    base = {"broken": None, "ssim": 1.0, "psnr": None, "min_ssim": 0.9, "latency": judged}
    assert verdict.decide(verdict.Inputs(**base)).headline == "undecided"
    strict = verdict.decide(verdict.Inputs(**base, require_baseline=True))
    assert strict.failed and [g.name for g in strict.failures] == ["latency"]
    assert "can't make it significant" in strict.failures[0].message


def test_strict_mode_fails_a_missing_baseline_naming_the_command():
    inputs = verdict.Inputs(
        broken=None, ssim=1.0, psnr=None, min_ssim=0.9, baseline_note=verdict.ENVIRONMENT_NOTE,
        require_baseline=True, record_command="pytest examples --diffaccel-save=all --diffaccel-save-runs=5",
    )  # fmt: skip
    decided = verdict.decide(inputs)
    assert [g.name for g in decided.failures] == ["baseline"]
    assert "`pytest examples --diffaccel-save=all --diffaccel-save-runs=5`" in decided.failures[0].message
    lenient = verdict.decide(verdict.Inputs(**{**inputs.__dict__, "require_baseline": False}))
    assert lenient.headline == "pass (no baseline for this environment)"


# ----------------------------------------------------------------------------- one event, the breakdown


def test_many_tests_moving_together_are_one_event():
    moving = [events.Movement(f"t{i}", 1.3, 0.10) for i in range(4)]
    quiet = [events.Movement(f"q{i}", 1.01, 0.10) for i in range(10)]
    fp32 = events.Movement("fp32", 1.31, 0.10, reference=True)
    line = events.together([*moving, *quiet, fp32, events.Movement("p", None, 0.1, picture_moved=True)])
    assert line is not None and line.startswith("6 of 16 tests moved together (5 slower, 1 picture moved)")
    assert "fp32 itself 1.31x slower in seconds: look at the machine or the stack" in line
    assert events.together([*moving[:2], *quiet]) is None  # two tests are two tests


def test_the_breakdown_names_only_the_component_that_carries_the_change():
    # the README's drill: the denoiser really slower; a 7 ms text encoder and a 5 ms rest moved by noise
    old = {"text encoder": 1.0, "denoiser": 1.0, "VAE decode": 1.0, "rest": 1.0}
    new = {"text encoder": 1.40, "denoiser": 1.38, "VAE decode": 1 / 1.17, "rest": 1.36}
    shares = {"text encoder": 0.006, "denoiser": 0.90, "VAE decode": 0.09, "rest": 0.004}
    text = breakdown.compare(new, old, shares=shares)
    assert text.startswith("denoiser 1.38x slower (")
    assert re.findall(r"(\w[\w ]*?) [0-9.]+x (?:slower|faster)", text) == ["denoiser"]
    assert text.endswith("text encoder, VAE decode, rest within noise")
    assert "within noise" in breakdown.compare(new, old, shares=shares, noises={"denoiser": 0.5})


# ----------------------------------------------------------------------------- end to end, on tiny-sd

SLOWER = """
def pytest_diffaccel_register_techniques(register):
    @register("a-bit-slower")  # a technique that changes nothing; the fire drill slows it when a test asks
    def a_bit_slower(pipe):
        return pipe
"""


def _rewrite(folder: Path, change) -> Path:
    (path,) = folder.glob("*.json")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def _another_cpu(data: dict) -> None:
    isa = data["environment"]["hardware"]["cpu"]["isa"]
    if "avx512_bf16" in isa:
        isa.remove("avx512_bf16")
    else:
        isa.append("avx512_bf16")


def test_another_environment_is_named_and_not_judged_strict_mode_fails_it(user_suite, run_inner, tmp_path, untimed):
    user_suite.makeconftest(SLOWER)
    folder = tmp_path / "b"
    args = ("--diffaccel-techniques=fp32,a-bit-slower", f"--diffaccel-baselines={folder}", "--diffaccel-steps=2")
    run_inner(*args, "--diffaccel-save=all", untimed).assert_outcomes(passed=2)
    path = _rewrite(folder, _another_cpu)
    before = path.read_bytes()
    has = "avx512_bf16" in fingerprint.probe("cpu")["hardware"]["cpu"]["isa"]

    elsewhere = run_inner(*args)
    elsewhere.assert_outcomes(passed=2)
    clause = "was recorded without avx512_bf16; this CPU has it" if has else "was recorded with avx512_bf16"
    elsewhere.stdout.fnmatch_lines([f"*no baseline for this environment: *{path.name} {clause}*"])
    elsewhere.stdout.fnmatch_lines(["fp32 *pass (no baseline for this environment)"])
    assert "fidelity regression" not in elsewhere.stdout.str()

    strict = run_inner(*args, "--diffaccel-require-baseline")
    strict.assert_outcomes(failed=2)
    strict.stdout.fnmatch_lines(
        ["*baseline gate failed: no baseline for this environment (--diffaccel-require-baseline fails every test "
         "not judged against its history): record one on this machine with `pytest *--diffaccel-save=all "
         "--diffaccel-save-runs=5`*"]
    )  # fmt: skip
    assert path.read_bytes() == before  # nothing written without --diffaccel-save


@pytest.mark.serial  # judged on the measured speed: run alone, not beside another worker
def test_a_stack_change_is_judged_and_named_and_undecided_is_not_a_pass(user_suite, run_inner, tmp_path, monkeypatch):
    user_suite.makeconftest(SLOWER)
    folder = tmp_path / "b"
    report = tmp_path / "r.json"
    args = ("--diffaccel-techniques=a-bit-slower", f"--diffaccel-baselines={folder}", "--diffaccel-fidelity-seeds=1")
    run_inner(*args, "--diffaccel-save=all").assert_outcomes(passed=1)

    def older_torch(data: dict) -> None:
        for record in data["entries"].values():
            for run in record["runs"]:
                run["versions"]["torch"] = "2.12.0"

    _rewrite(folder, older_torch)
    # the fire drill: real extra work in every call, calibrated to 15% of it at whatever number of steps.
    # max-slowdown 5%: the ~1.15x slowdown is beyond it, yet a one-run history (spread assumed 5%) can only make
    # a slowdown beyond ~1.26x significant
    monkeypatch.setenv("DIFFACCEL_SLOWDOWN", "a-bit-slower=15%")
    upgraded = run_inner(*args, "--diffaccel-max-slowdown=5%", f"--diffaccel-json={report}")
    upgraded.stdout.fnmatch_lines(["*stack changed since the history: torch 2.12.0 -> *"])
    (bench,) = json.loads(report.read_text())["benchmarks"]
    baseline = bench["extra_info"]["baseline"]
    assert baseline["stack_changes"] and baseline["stack_changes"][0].startswith("torch 2.12.0 -> ")
    (gate,) = [g for g in bench["extra_info"]["gates"] if g["gate"] == "latency"]
    assert gate["message"].startswith("after torch 2.12.0 -> ")
    if baseline["undecided"]:  # the usual case; a block that landed inside 5% (noise) can't be undecided
        upgraded.assert_outcomes(passed=1)
        assert bench["extra_info"]["verdict"] == "undecided"
        upgraded.stdout.fnmatch_lines(["*undecided a-bit-slower: *x beyond max-slowdown 5% against 1 run(s)*"])
        strict = run_inner(*args, "--diffaccel-max-slowdown=5%", "--diffaccel-require-baseline")
        strict.assert_outcomes(failed=1)  # undecided again (strict fails it), or beyond doubt this time
        strict.stdout.fnmatch_lines(["*latency gate failed: *"])
    else:
        pytest.fail(f"the ~1.15x slowdown was not undecided: {gate['message']}")
