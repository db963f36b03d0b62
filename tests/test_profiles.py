"""Target profiles and recipe look-ups: every shipped file validates; bad files report every problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from leapkit import profiles as P
from leapkit.errors import ConfigError

REQUIRED_TARGETS = {"jetson-orin-nano", "jetson-orin-nano-super", "jetson-orin-nx", "jetson-agx-orin", "x86-cpu"}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leapkit", *args], capture_output=True, text=True, timeout=120)


def test_required_targets_ship():
    assert set(P.list_targets()) >= REQUIRED_TARGETS
    families = {P.load_target(n).family for n in P.list_targets()}
    assert {"jetson", "cpu", "gpu"} <= families


@pytest.mark.parametrize("name", P.list_targets())
def test_every_shipped_target_is_valid(name):
    assert P.validate_target(name) == []
    t = P.load_target(name)
    assert t.name == name
    assert t.precision in t.precisions
    assert all(t.peak_ops(p) and t.peak_ops(p) > 0 for p in t.precisions)
    assert t.latency_budget_ms > 0 and t.budget_stat in P.STATS
    if t.runtime == "tensorrt":
        assert t.tensorrt_major is not None and t.tensorrt_major >= 10


def test_every_peak_figure_cites_a_source():
    # Each peak line carries a comment on it or just above it.
    for name in P.list_targets():
        lines = (P.targets_dir() / f"{name}.yaml").read_text().splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("peak_tops:"))
        length = next(i for i, line in enumerate(lines[start + 1 :]) if not line.startswith(" "))
        block = lines[start + 1 : start + 1 + length]
        assert any(line.strip().startswith("#") for line in block), name


@pytest.mark.parametrize("name", P.list_recipes())
def test_every_shipped_recipe_is_valid(name):
    assert P.validate_recipe(name) == []


def test_family_resolves_to_its_default():
    for family, default in P.FAMILY_DEFAULTS.items():
        assert P.load_target(family).name == default
        assert P.load_target(family).family == family


def test_jetson_figures_are_consistent():
    nano, sup, agx = (P.load_target(n) for n in ("jetson-orin-nano", "jetson-orin-nano-super", "jetson-agx-orin"))
    assert sup.peak_tops["int8"] > nano.peak_tops["int8"]
    assert sup.memory_bandwidth_gbs > nano.memory_bandwidth_gbs
    assert agx.peak_tops["fp32"] == pytest.approx(5.3)
    for t in (nano, sup, agx):
        assert t.jetpack.startswith("6") and t.tensorrt == "10.3"


def test_input_size_null_means_training_resolution():
    t = P.load_target("x86-cpu")
    assert t.input_size is None
    assert t.resolve_input_size(32) == 32


def test_unknown_target_lists_known():
    with pytest.raises(ConfigError, match=r"unknown target 'orin-mega'; known: .*jetson-orin-nano.*x86-cpu"):
        P.load_target("orin-mega")
    assert "unknown target" in P.validate_target("orin-mega")[0]


def _write(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load((P.targets_dir() / "x86-cpu.yaml").read_text())
    data.update(changes)
    for k, v in list(data.items()):
        if v == "DROP":
            del data[k]
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_custom_file_loads(tmp_path):
    t = P.load_target(_write(tmp_path, name="my-box", latency_budget_ms=12))
    assert t.name == "my-box" and t.latency_budget_ms == 12.0


def test_all_problems_reported_at_once(tmp_path):
    path = _write(tmp_path, precision="int4", batch=0, latency_budget_ms=-1, budget_stat="p42", speed="fast",
                  memory_gb="DROP")
    problems = P.validate_target(path)
    text = "\n".join(problems)
    for needle in ("precision must be one of fp32|fp16|bf16|int8", "batch must be an integer >= 1",
                   "latency_budget_ms must be a number > 0", "budget_stat must be one of", "unknown key 'speed'",
                   "missing key 'memory_gb'"):
        assert needle in text
    with pytest.raises(ConfigError, match="is invalid: .*batch must be.*latency_budget_ms"):
        P.load_target(path)


def test_cross_field_problems(tmp_path):
    path = _write(tmp_path, runtime="tensorrt", precisions=["fp32", "fp16"], precision="int8")
    text = "\n".join(P.validate_target(path))
    assert "precision 'int8' is not in precisions" in text
    assert "peak_tops.fp16 is null" in text
    assert "needs the expected TensorRT version" in text and "needs workspace_mb" in text


def test_x86_cpu_chooses_the_fastest_of_openvino_and_onnxruntime():
    x86 = P.load_target("x86-cpu")
    assert (x86.runtime, x86.runtimes, x86.choose) == ("onnxruntime", ("openvino", "onnxruntime"), "fastest")
    assert x86.deploy_runtimes == ("openvino", "onnxruntime") and x86.precisions == ("fp32", "bf16", "int8")
    assert x86.peak_ops("bf16") == pytest.approx(2 * x86.peak_ops("fp32"))  # two bf16 MACs per 32-bit lane
    assert x86.to_dict()["runtimes"] == ["openvino", "onnxruntime"] and x86.to_dict()["choose"] == "fastest"
    text = (P.targets_dir() / "x86-cpu.yaml").read_text()
    assert "benchmarks/results/cpu_runtimes.md" in text
    measured = json.loads((Path(__file__).parents[1] / "benchmarks/results/cpu_runtimes.json").read_text())
    for row in measured["rows"]:  # the figures the choice rests on, as the committed benchmark measured them
        assert f"{row['p50_ms']:.1f} ms" in text, (row["runtime"], row["precision"], row["p50_ms"])


def test_a_missing_bf16_peak_is_unknown_not_an_error(tmp_path):
    nano = P.load_target("jetson-orin-nano")
    assert "bf16" not in nano.peak_tops and nano.peak_ops("bf16") is None and nano.bound_ops("bf16") is None
    assert nano.deploy_runtimes == ("tensorrt",) and nano.choose == "profile"
    peaks = {"fp32": 0.237, "fp16": None, "int8": 0.947}  # no bf16 key at all
    assert P.validate_target(_write(tmp_path, peak_tops=peaks)) == []
    text = "\n".join(P.validate_target(_write(tmp_path, peak_tops={**peaks, "bf16": None})))
    assert "precision bf16 is listed in precisions but peak_tops.bf16 is null" in text


@pytest.mark.parametrize("changes, problem", [
    ({"choose": "quick"}, "choose must be one of profile|fastest, got 'quick'"),
    ({"runtimes": ["openvino", "openvino", "onnxruntime"]},
     "runtimes must be a list of distinct values from onnxruntime|openvino|tensorrt"),
    ({"runtimes": ["openvino", "tflite"]}, "runtimes[1] must be one of onnxruntime|openvino|tensorrt, got 'tflite'"),
    ({"runtimes": ["openvino"]}, "runtime onnxruntime is not in runtimes ['openvino']; list it there too"),
    ({"runtimes": "DROP"}, "precision bf16 runs only on OpenVINO (the fp32 IR with the bf16 inference precision hint): "
                           "add openvino to runtimes, or drop bf16 from precisions"),
    ({"family": "jetson", "jetpack": "6.2"}, "runtime openvino runs on the CPU: it is for family cpu, not jetson"),
])
def test_runtimes_and_choose_are_checked(tmp_path, changes, problem):
    problems = P.validate_target(_write(tmp_path, **changes))
    assert any(problem in p for p in problems), problems


def test_kind_of():
    assert P.kind_of("jetson") == "target" and P.kind_of("x86-cpu") == "target"
    assert P.kind_of("demo") == "recipe"
    with pytest.raises(ConfigError, match="neither a target nor a recipe"):
        P.kind_of("nope")


def test_cli_list_show_validate():
    r = cli("profiles", "list")
    assert r.returncode == 0, r.stderr
    assert "jetson-orin-nano-super" in r.stdout and "demo" in r.stdout
    r = cli("profiles", "show", "jetson")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["name"] == "jetson-orin-nano"
    r = cli("profiles", "validate")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(": ok") == len(P.list_targets()) + len(P.list_recipes())


def test_cli_validate_bad_file_exits_2(tmp_path):
    path = _write(tmp_path, batch=0, budget_stat="p42")
    r = cli("profiles", "validate", "x86-cpu", str(path))
    assert r.returncode == 2
    assert "target x86-cpu: ok" in r.stdout
    assert "batch must be an integer >= 1" in r.stdout and "budget_stat must be one of" in r.stdout
    assert r.stderr.count("\n") == 1 and "1 of 2 profiles are invalid" in r.stderr
    r = cli("profiles", "show", "orin-mega")
    assert r.returncode == 2 and "neither a target nor a recipe" in r.stderr


def test_cli_validate_lists_every_recipe_problem_on_its_own_line(tmp_path):
    recipe = tmp_path / "typos.yaml"
    recipe.write_text("data:\n  source: digits\ntrain:\n  epoch: 3\n  batchsize: 8\ncurriculum:\n  treshold: 0.5\n")
    r = cli("profiles", "validate", str(recipe))
    assert r.returncode == 2
    assert f"recipe {recipe}: 3 problem(s)" in r.stdout  # the report; stderr has the one-line verdict
    lines = [line for line in r.stdout.splitlines() if line.startswith("  - ")]
    assert lines == [
        "  - unknown key 'train.epoch' (did you mean 'train.epochs'?)",
        "  - unknown key 'train.batchsize' (did you mean 'train.batch_size'?)",
        "  - unknown key 'curriculum.treshold' (did you mean 'curriculum.threshold'?)",
    ]


def test_type_problems_come_from_the_shared_checker(tmp_path):
    path = _write(tmp_path, batch="four", input_size=6.5, jetpack=6.2, precisions="fp16", peak_tops={"fp32": "fast"},
                  runtme="onnxruntime")
    text = "\n".join(P.validate_target(path))
    for needle in ("batch must be an integer, got 'four'", "input_size must be an integer or null, got 6.5",
                   "jetpack must be a string (quote numbers in YAML) or null, got 6.2",
                   "precisions must be a list of fp32|fp16|bf16|int8, got 'fp16'",
                   "peak_tops.fp32 must be a number or null",
                   "unknown key 'runtme' (did you mean 'runtime'?)"):
        assert needle in text


def test_profile_types_are_the_shared_vocabulary():
    from leapkit import types

    assert P.Precision is types.Precision and P.Stat is types.Stat
    assert P.Family is types.Family and P.TargetRuntime is types.TargetRuntime
    assert P.PRECISIONS is types.PRECISIONS and P.STATS is types.STATS


# ---------------------------------------------------------------- recognising the device, the bound's figures


@pytest.mark.parametrize("name, targets", [
    ("NVIDIA Jetson Orin Nano Developer Kit", {"jetson-orin-nano", "jetson-orin-nano-super"}),
    ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
     {"jetson-orin-nano", "jetson-orin-nano-super"}),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", {"jetson-orin-nx"}),
    ("Jetson AGX Orin", {"jetson-agx-orin"}),
    ("NVIDIA GeForce RTX 4090", {"rtx-4090"}),
    ("Raspberry Pi 5 Model B Rev 1.0", {"raspberry-pi-5"}),
    ("x86_64", {"x86-cpu"}),
    ("Orin", set()),  # what trtexec prints on every Orin module: it names none of them
    ("NVIDIA GeForce RTX 3090", set()),
    ("aarch64", set()),
])
def test_device_match_names_exactly_its_devices(name, targets):
    assert {t for t in P.list_targets() if P.load_target(t).matches([name])} == targets


def test_every_shipped_target_can_recognise_its_device_and_bound_its_latency():
    for name in P.list_targets():
        t = P.load_target(name)
        assert t.device_match and t.cache_mb is not None, name
        if t.family == "jetson":
            assert t.power_modes and t.tf32_tops == pytest.approx(t.peak_tops["fp16"] / 2, rel=0.01), name
        assert all(t.bound_ops(p) >= t.peak_ops(p) for p in t.precisions), name


def test_power_modes_tell_the_two_orin_nano_profiles_apart():
    nano, sup = P.load_target("jetson-orin-nano"), P.load_target("jetson-orin-nano-super")
    assert nano.device_match == sup.device_match and nano.power_modes == ("15W",)
    assert sup.power_modes == ("MAXN_SUPER",)


def test_orin_nano_super_memory_comment_matches_its_bandwidth():
    """The header said "memory 3200 MT/s", which gives 51 GB/s on 128 bits, not the 102 GB/s below it."""
    text = (P.targets_dir() / "jetson-orin-nano-super.yaml").read_text()
    assert "3200 MT/s" not in text and "6400 MT/s" in text
    bandwidth = P.load_target("jetson-orin-nano-super").memory_bandwidth_gbs
    assert bandwidth == pytest.approx(6400e6 * 128 / 8 / 1e9, rel=0.01)


def test_no_profile_says_jetpack_5_ships_tensorrt_8_6():
    """JetPack 5.1.x ships TensorRT 8.5.2; 8.6 came with JetPack 6.0 DP only."""
    for path in [*P.targets_dir().glob("*.yaml"), Path(P.__file__)]:
        for line in path.read_text().splitlines():
            assert not ("JetPack 5" in line and "8.6" in line), (path.name, line)


def test_device_fields_are_checked(tmp_path):
    path = _write(tmp_path, device_match=["Orin (Nano"], cache_mb=-1, tf32_tops=0, power_modes="MAXN")
    text = "\n".join(P.validate_target(path))
    for needle in ("device_match[0] is not a regular expression", "cache_mb must be a number >= 0",
                   "tf32_tops must be a number > 0", "power_modes must be a list of"):
        assert needle in text, text


def test_fp32_bound_uses_tf32_only_for_tensorrt_targets():
    orin, x86 = P.load_target("jetson-orin-nano"), P.load_target("x86-cpu")
    assert orin.bound_ops("fp32") == pytest.approx(orin.tf32_tops * 1e12)
    assert orin.bound_ops("fp16") == orin.peak_ops("fp16")
    assert x86.bound_ops("fp32") == x86.peak_ops("fp32") and x86.bound_ops("fp16") is None
