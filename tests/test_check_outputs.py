"""The device check (check_engine.sh + check_outputs.py) against engines that are right and engines that are wrong.

trtexec is replaced by a stand-in that runs the bundle's fp32 ONNX through ONNX Runtime on the reference input file
it is given, and writes the outputs as trtexec's ``--exportOutput`` does. It checks the scripts' contract with
trtexec (flags, file sizes, the output format), not the device. FAKE_DEFECT makes it the wrong engines a device
can have: values reversed after the first 8 (the norm kept), the channels reversed at the input (RGB/BGR), 5% noise
on the patch tokens, images 2 and 3 swapped in a batch, a CLS feature nudged across the probe's boundary, a short
output, a nan. The bundle is a tiny ViT-shaped ONNX graph (tokens, cls, patch_tokens after a LayerNorm), its
reference written by the export's own writer.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from leapkit.deploy import bundle as b
from leapkit.deploy import check_outputs as co
from leapkit.deploy.manifest import ExportManifest, InputSpec, TargetInfo, Variant
from leapkit.deploy.parity import device_tolerances
from leapkit.errors import ConfigError
from leapkit.profiles import load_target
from leapkit.runtimes.ort_runner import OrtRunner

SIZE, PATCH, DIM = 8, 4, 6
TOKENS = 1 + (SIZE // PATCH) ** 2
BATCH = 8
PRECISIONS = ("fp32", "fp16", "int8")
NUDGED = 5  # the image whose CLS the "probe" defect pushes across the probe's boundary

STAND_IN = f"""#!{sys.executable}
# trtexec stand-in: builds record the flags, runs execute the bundle's fp32 ONNX with ONNX Runtime.
import json, os, sys
from pathlib import Path
import numpy as np

opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
with open(os.environ["FAKE_ARGS"], "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
print("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec " + " ".join(sys.argv[1:]))
print("[I] Selected Device: " + os.environ.get("FAKE_GPU", "Orin"))
if "saveEngine" in opts:
    Path(opts["saveEngine"]).write_text("engine")
    sys.exit(0)
if not Path(opts["loadEngine"]).is_file():
    print("[E] Error opening engine file: " + opts["loadEngine"])
    sys.exit(1)
name, dims = opts["shapes"].split(":")
shape = [int(d) for d in dims.split("x")]
x = np.fromfile(opts["loadInputs"].split(":", 1)[1], dtype="<f4")
if x.size != np.prod(shape):
    print("[E] File size doesn't match input size")
    sys.exit(1)
x = x.reshape(shape)
defect, batch = os.environ.get("FAKE_DEFECT", ""), shape[0]
if defect == "bgr":
    x = np.ascontiguousarray(x[:, ::-1])
import onnxruntime as ort
session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
out = dict(zip([o.name for o in session.get_outputs()], session.run(None, {{name: x}})))
rng = np.random.default_rng(0)
if defect == "reverse":
    for k, v in out.items():
        flat = v.ravel().copy()
        flat[8:] = flat[8:][::-1]
        out[k] = flat.reshape(v.shape)
if defect == "noise":
    noise = rng.standard_normal(out["patch_tokens"].shape) * 0.05 * np.sqrt(np.mean(out["patch_tokens"] ** 2))
    out["patch_tokens"] = out["patch_tokens"] + noise
    out["tokens"][:, 1:] += noise
if defect == "swap" and batch > 3:
    for v in out.values():
        v[[2, 3]] = v[[3, 2]]
if defect == "probe" and batch > {NUDGED}:
    nudge = np.load(os.environ["FAKE_NUDGE"])
    out["cls"][{NUDGED}] += nudge
    out["tokens"][{NUDGED}, 0] += nudge
dump = [{{"name": k, "dimensions": "x".join(map(str, v.shape)), "values": v.ravel().tolist()}} for k, v in out.items()]
if defect == "short" and batch > 1:
    dump[0]["values"] = dump[0]["values"][:-10]
if defect == "nan" and batch > 1:
    dump[2]["values"][3] = float("nan")
Path(opts["exportOutput"]).write_text(json.dumps(dump).replace("NaN", "nan"))  # trtexec prints bare nan
"""


def tiny_vit(path: Path) -> None:
    """A ViT-shaped ONNX graph: 4x4 patches embedded, a CLS token from their mean, LayerNorm; three outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    init = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("w", rng.standard_normal((3 * PATCH * PATCH, DIM)) * 0.3), ("b", rng.standard_normal(DIM) * 0.1),
        ("wc", rng.standard_normal((DIM, DIM))), ("gamma", 1 + 0.1 * rng.standard_normal(DIM)),
        ("beta", 0.1 * rng.standard_normal(DIM))]]
    init += [numpy_helper.from_array(np.array(a, np.int64), n) for n, a in [
        ("s1", [0, 3, SIZE // PATCH, PATCH, SIZE // PATCH, PATCH]), ("s2", [0, TOKENS - 1, 3 * PATCH * PATCH]),
        ("one", [1]), ("end", [TOKENS]), ("axis1", [1]), ("zero", 0)]]
    nodes = [
        helper.make_node("Reshape", ["images", "s1"], ["r1"]),
        helper.make_node("Transpose", ["r1"], ["t1"], perm=[0, 2, 4, 1, 3, 5]),
        helper.make_node("Reshape", ["t1", "s2"], ["patches"]),
        helper.make_node("MatMul", ["patches", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["mb"]),
        helper.make_node("Tanh", ["mb"], ["emb"]),
        helper.make_node("ReduceMean", ["emb"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("MatMul", ["mean", "wc"], ["c"]),
        helper.make_node("Concat", ["c", "emb"], ["cat"], axis=1),
        helper.make_node("LayerNormalization", ["cat", "gamma", "beta"], ["tokens"], axis=-1),
        helper.make_node("Gather", ["tokens", "zero"], ["cls"], axis=1),
        helper.make_node("Slice", ["tokens", "one", "end", "axis1"], ["patch_tokens"]),
    ]
    out = [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", TOKENS, DIM]),
           helper.make_tensor_value_info("cls", TensorProto.FLOAT, ["batch", DIM]),
           helper.make_tensor_value_info("patch_tokens", TensorProto.FLOAT, ["batch", TOKENS - 1, DIM])]
    graph = helper.make_graph(nodes, "tiny_vit", [helper.make_tensor_value_info(
        "images", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])], out, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def knife_edge_probe(cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A two-class probe whose boundary passes 1e-3 from image NUDGED's CLS feature (class 0 there)."""
    u = np.random.default_rng(2).standard_normal(DIM)
    u /= np.linalg.norm(u)
    weight = np.stack([u, -u], 1)
    bias = np.array([-2 * (u @ cls[NUDGED]) + 5e-4, 0.0])  # class 0 ahead by 5e-4
    return weight, bias


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A jetson bundle of the tiny model (fp32, fp16, int8 ONNX; batch 1/8/8), as export writes it."""
    folder = tmp_path_factory.mktemp("bundle")
    tiny_vit(folder / "model.onnx")
    for p in ("fp16", "int8"):  # the stand-in runs model.onnx whatever the engine: copies are enough
        (folder / f"model_{p}.onnx").write_bytes((folder / "model.onnx").read_bytes())
    images = np.random.default_rng(0).standard_normal((b.reference_image_count(BATCH), 3, SIZE, SIZE))
    images = images.astype(np.float32)
    fp32 = OrtRunner(folder / "model.onnx")
    outputs = fp32(images)  # stands in for PyTorch's
    probe = knife_edge_probe(outputs["cls"])
    reference = b.write_reference(folder, images, outputs, BATCH, probe)
    reference["tolerance"] = device_tolerances(outputs, {"fp32": fp32}, images, probe)
    profile = load_target("jetson")
    files = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx"}
    manifest = ExportManifest(
        format_version=1, leapkit_version="0.1.0", created="2026-01-01T00:00:00+00:00", status="ok",
        source_run="/runs/tiny", target=TargetInfo(name=profile.name, family=profile.family,
                                                   runtime=profile.runtime, precision=profile.precision),
        student={"model": "tiny_vit", "img_size": SIZE}, exporter="onnx.helper", opset=17,
        input=InputSpec(name="images", shape=["batch", 3, SIZE, SIZE], dtype="float32", mean=[0.5] * 3,
                        std=[0.5] * 3),
        outputs=[{"name": n, "shape": ["batch"], "description": n} for n in outputs],
        batch={"min": 1, "opt": BATCH, "max": BATCH},
        variants=[Variant(precision=p, format="onnx", file=f, status="ok") for p, f in files.items()],
        reference=reference,
    )
    b.write_scripts(folder, manifest, profile)
    manifest.record_files(folder)
    manifest.save(folder / "manifest.json")
    for p in PRECISIONS:  # the engines, built once by build_engine.sh and the stand-in
        assert run_script(folder, "build_engine.sh", p).returncode == 0
    np.save(folder / "nudge.npy", -1e-3 * probe[0][:, 0])  # for the stand-in: across the boundary
    return folder


@pytest.fixture
def bundle(made, tmp_path) -> Path:
    """A fresh copy of the bundle and its engines."""
    import shutil

    folder = tmp_path / "bundle"
    shutil.copytree(made, folder, ignore=shutil.ignore_patterns("results"))
    return folder


def run_script(folder: Path, name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A bundle script run as on the device: python3 on PATH (with numpy), the stand-in as TRTEXEC."""
    bindir = folder.parent / "device-bin"
    bindir.mkdir(exist_ok=True)
    if not (bindir / "python3").exists():
        (bindir / "python3").symlink_to(sys.executable)
    fake = bindir / "trtexec"
    if not fake.exists():
        fake.write_text(STAND_IN)
        fake.chmod(0o755)
    full = {"PATH": f"{bindir}:/usr/bin:/bin", "TRTEXEC": str(fake), "FAKE_ARGS": str(folder.parent / "args.txt"),
            "FAKE_NUDGE": "nudge.npy", **env}
    return subprocess.run(["bash", str(folder / name), *args], capture_output=True, text=True, env=full)


def check(folder: Path, precision: str, **env: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = run_script(folder, "check_engine.sh", precision, **env)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    report = json.loads((folder / "results" / precision / "check.json").read_text())
    assert report["passed"] == (proc.returncode == 0), proc.stdout
    return proc, report


def test_reference_files_numpy_reads_without_leapkit(made):
    manifest = json.loads((made / "manifest.json").read_text())
    ref = manifest["reference"]
    assert ref["images"] == 8 and [r["name"] for r in ref["runs"]] == ["b1_0", "b8_0"]
    images = np.fromfile(made / "reference_input_b8_0.bin", dtype="<f4").reshape(8, 3, SIZE, SIZE)
    np.testing.assert_array_equal(np.fromfile(made / "reference_input_b1_0.bin", dtype="<f4"), images[0].ravel())
    got = OrtRunner(made / "model.onnx")(images)
    for name, spec in ref["outputs"].items():
        np.testing.assert_array_equal(np.load(made / spec["file"]), got[name])
        assert spec["rms"] == pytest.approx(float(np.sqrt(np.mean(got[name].astype(np.float64) ** 2))))
    assert set(ref["tolerance"]) == set(PRECISIONS) and ref["probe"]["classes"] == 2
    assert all(manifest["files"][r["file"]] for r in ref["runs"])  # hashed: a truncated copy is found
    assert b.reference_runs(8, 1)[-1] == {"name": "b1_7", "batch": 1, "file": "reference_input_b1_7.bin",
                                          "images": [7]}
    assert b.reference_image_count(3) == 9 and b.reference_image_count(16) == 16


@pytest.mark.parametrize("precision", [pytest.param("fp32", marks=pytest.mark.slow), "fp16",
                                       pytest.param("int8", marks=pytest.mark.slow)])
def test_an_honest_engine_passes_at_every_precision(bundle, precision):
    proc, report = check(bundle, precision)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("PASS"), proc.stdout + proc.stderr
    assert [r["batch"] for r in report["runs"]] == [1, 8]
    assert set(report["outputs"]) == {"tokens", "cls", "patch_tokens"}
    assert report["outputs"]["tokens"]["cosine_token_min"] > 0.99999 and report["probe"]["agreement"] == 1.0
    runs = [line for line in (bundle.parent / "args.txt").read_text().splitlines() if "--loadInputs" in line]
    assert any("--shapes=images:8x3x8x8 --loadInputs=images:reference_input_b8_0.bin" in r for r in runs)


@pytest.mark.parametrize("defect,line", [
    ("reverse", "tokens: worst per-image cosine"),
    ("bgr", "patch_tokens: worst per-token cosine"),
    ("noise", "patch_tokens: max abs error"),
    ("swap", "tokens: worst per-image cosine"),
    ("probe", "cls: linear-probe top-1 agreement with PyTorch 88.9% (8 of 9 images) < 99.0% required"),
])
@pytest.mark.parametrize("precision", ["fp32", pytest.param("fp16", marks=pytest.mark.slow)])
def test_a_wrong_engine_fails_naming_the_output_and_the_figure(bundle, defect, line, precision):
    proc, report = check(bundle, precision, FAKE_DEFECT=defect)
    assert proc.returncode == 1 and proc.stdout.rstrip().endswith("FAIL")
    assert any(p.startswith(line) for p in report["problems"]), report["problems"]
    assert any(out.startswith(line) for out in proc.stdout.splitlines())
    if defect == "swap":  # the images named are the swapped ones, in the batch of 8 only
        assert all("in run b8_0" in p and ("(image 2" in p or "(image 3" in p) for p in report["problems"])
        worst = report["outputs"]["tokens"]  # the worst of both runs, and where it is
        assert worst["worst_image"] in (2, 3) and worst["worst_token"][0] in (2, 3)
        assert worst["cosine_image_min"] == report["runs"][1]["outputs"]["tokens"]["cosine_image_min"]
    if defect == "probe":  # nothing but the probe sees it
        assert report["problems"] == [line]


@pytest.mark.slow
def test_an_int8_engine_with_swapped_images_fails_too(bundle):
    proc, report = check(bundle, "int8", FAKE_DEFECT="swap")
    assert proc.returncode == 1 and any(p.startswith("cls: worst per-image cosine") for p in report["problems"])


@pytest.mark.parametrize("damage,message", [
    ("missing", "reference_tokens.npy is missing from the bundle: copy the whole export folder to the device (or "
                "export the run again)"),
    ("truncated", "reference_patch_tokens.npy does not match its sha256 in manifest.json (truncated or changed in "
                  "the copy): copy it again from the export folder"),
    ("short", "tokens: 230 values in run b8_0, the reference has 240 (8 images of [5, 6]); the engine's output is "
              "short"),
    ("nan", "patch_tokens: 1 non-finite values (nan/inf) in the engine's output of run b8_0"),
])
def test_bad_input_is_one_line_and_a_check_json(bundle, damage, message):
    env = {}
    if damage == "missing":
        for f in bundle.glob("reference_*.npy"):
            f.unlink()
    elif damage == "truncated":
        path = bundle / "reference_patch_tokens.npy"
        path.write_bytes(path.read_bytes()[:200])
    else:
        env["FAKE_DEFECT"] = damage
    proc, report = check(bundle, "fp16", **env)
    assert proc.returncode == 1 and report["problems"] == [message]
    assert message in proc.stdout.splitlines() and proc.stdout.rstrip().endswith("FAIL")


@pytest.mark.slow
def test_an_engine_built_elsewhere_is_refused(bundle):
    """A workstation engine copied along: its sidecar names another GPU; the device-built one passes."""
    sidecar = bundle / "model_fp16.engine.json"
    built_here = json.loads(sidecar.read_text())
    assert built_here["gpu"] == "Orin" and built_here["tensorrt_code"] == "100300"
    sidecar.write_text(json.dumps({"engine": "model_fp16.engine", "gpu": "NVIDIA RTX A5000",
                                   "tensorrt_version": "10.8.0.43", "precision": "fp16"}))
    proc, report = check(bundle, "fp16")
    assert report["problems"] == [
        "model_fp16.engine was built on NVIDIA RTX A5000 with TensorRT 10.8.0, this device is Orin with TensorRT "
        "10.3.0: engines do not move between GPUs or TensorRT versions; build it here with ./build_engine.sh fp16"]
    sidecar.write_text(json.dumps(built_here))
    proc, report = check(bundle, "fp16", FAKE_GPU="Orin (another module)")
    assert proc.returncode == 1 and report["problems"][0].startswith("model_fp16.engine was built on Orin with ")
    assert check(bundle, "fp16")[1]["passed"]


@pytest.mark.slow
def test_a_failed_trtexec_run_is_a_failed_check(bundle):
    (bundle / "reference_input_b8_0.bin").write_bytes(b"\0" * 12)  # trtexec refuses a file of the wrong size
    proc, report = check(bundle, "fp32")
    assert "trtexec could not run model.engine on reference_input_b8_0.bin (batch 8)" in proc.stderr
    assert report["problems"][0].startswith("reference_input_b8_0.bin does not match its sha256")
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["files"]["reference_input_b8_0.bin"]  # unlisted: the run's missing output says it
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc, report = check(bundle, "fp32")
    assert len(report["problems"]) == 1 and "engine_output_b8_0.json" in report["problems"][0]
    assert "did trtexec run?" in report["problems"][0]


def test_an_old_manifest_is_refused_with_the_fix(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"reference": {"outputs": {"cls": {"first": [0.0], "l2": 1}},
                                                                      "tolerance": {"fp16": {"l2_rel": 0.01}}}}))
    proc = subprocess.run([sys.executable, co.__file__, str(tmp_path / "manifest.json"), "fp16", str(tmp_path),
                           "--report", str(tmp_path / "check.json")], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "check.json").read_text())["problems"] == [
        "manifest.json has no reference images (an export older than the full-output check): export the run again"]


@pytest.mark.parametrize("token", ["nan", "-nan", "inf", "-inf", "-nan(ind)"])
def test_trtexec_non_finite_tokens_are_read(token, tmp_path):
    """trtexec prints non-finite floats as bare C tokens, which strict JSON rejects."""
    path = tmp_path / "out.json"
    path.write_text(f'[\n  {{ "name" : "cls"\n  , "dimensions" : "1x3"\n  , "values" : [ 0.1, {token}, 0.2 ]\n  }}\n]')
    (values,) = co.read_outputs(str(path)).values()
    assert values.shape == (3,) and not np.isfinite(values[1]) and np.isfinite(values[[0, 2]]).all()


@pytest.mark.slow
def test_a_real_export_passes_with_an_honest_engine_and_fails_a_wrong_one(tmp_path):
    """The demo student exported for the Orin Nano (fp32, fp16, int8; tolerances measured with ONNX Runtime): the
    stand-in engine passes at every precision the bundle holds; with its values reversed after the first 8 it fails,
    also at int8. (The demo's digits are grey: their three channels are equal, so RGB/BGR cannot show on them.)"""
    import shutil

    from helpers import make_run

    import leapkit.deploy.export as ex

    run = make_run(tmp_path / "run")
    result = ex.export(run, target="jetson-orin-nano", precision="all", check=False, calib_images=32,
                       parity_images=16, probe_images=200)
    folder = result.out_dir
    ref = result.manifest.reference
    assert ref["images"] == 8 and ref["probe"] and set(ref["tolerance"]) == set(PRECISIONS)
    assert all(ref["tolerance"][p]["measured_with_onnxruntime"] for p in PRECISIONS)
    assert {n for n in result.manifest.files if n.startswith("reference_")} == {
        *(f"reference_input_b1_{i}.bin" for i in range(8)), "reference_tokens.npy", "reference_cls.npy",
        "reference_patch_tokens.npy", "reference_probe.npz"}
    shutil.copytree(folder, tmp_path / "device" / "bundle")
    device = tmp_path / "device" / "bundle"
    for precision in PRECISIONS:
        assert run_script(device, "build_engine.sh", precision).returncode == 0
        proc, report = check(device, precision)
        assert proc.returncode == 0, proc.stdout
        assert [r["batch"] for r in report["runs"]] == [1] * 8 and report["probe"]["images"] == 8
        proc, report = check(device, precision, FAKE_DEFECT="reverse")
        assert proc.returncode == 1 and any("cosine" in p for p in report["problems"]), report["problems"]


def test_engines_built_here_never_go_to_the_device(made, tmp_path):
    """bench --host copies the manifest's files: a workstation engine and its sidecar stay behind."""
    import shutil

    from leapkit.device.round_trip import Bundle

    folder = tmp_path / "export"
    shutil.copytree(made, folder)
    manifest = ExportManifest.load(folder)
    manifest.record_files(folder)  # now lists the engines built in the folder, as an export on a GPU does
    manifest.save(folder / "manifest.json")
    assert "model_fp16.engine" in manifest.files and "model_fp16.engine.json" in manifest.files
    sent = {p.name for p in Bundle.read(folder, load_target("jetson"), "fp16").files}
    assert not {n for n in sent if ".engine" in n}
    assert {"model_fp16.onnx", "reference_input_b8_0.bin", "reference_tokens.npy", "reference_probe.npz",
            "check_outputs.py", "manifest.json"} <= sent and "model.onnx" not in sent



@pytest.mark.parametrize("name", ["../secret.txt", "/etc/hostname", "sub/model.onnx", ".."])
def test_a_manifest_naming_a_file_outside_the_bundle_sends_nothing(name, made, tmp_path):
    import shutil

    from leapkit.device.round_trip import Bundle

    folder = tmp_path / "export"
    shutil.copytree(made, folder)
    (tmp_path / "secret.txt").write_text("not the device's")
    manifest = ExportManifest.load(folder)
    manifest.files[name] = "0" * 64
    manifest.save(folder / "manifest.json")
    with pytest.raises(ConfigError, match=f"lists {re.escape(name)}, not a file of the bundle; export it again"):
        Bundle.read(folder, load_target("jetson"), "fp16")

def test_the_same_check_runs_on_engines_built_on_the_workstation(made):
    """export's engine_check feeds the runner's outputs to check_outputs.check: an engine built here that swaps
    images fails with the device's line (ONNX Runtime stands in for the TensorRT runner)."""
    from leapkit.deploy.export import _Export

    manifest = json.loads((made / "manifest.json").read_text())
    images = np.fromfile(made / "reference_input_b8_0.bin", dtype="<f4").reshape(8, 3, SIZE, SIZE)
    export = _Export.__new__(_Export)
    export.out, export.reference, export.reference_x = made, manifest["reference"], images
    runner = OrtRunner(made / "model.onnx")

    def swapping(x):
        out = runner(x)
        return {k: v[[0, 1, 3, 2, *range(4, len(v))]] if len(v) == 8 else v for k, v in out.items()}

    honest = Variant(precision="fp16", format="tensorrt", file="model_fp16.engine", status="ok")
    export.engine_check(honest, runner)
    assert honest.status == "ok" and honest.check["passed"] and honest.check["probe"]["agreement"] == 1.0
    wrong = Variant(precision="fp16", format="tensorrt", file="model_fp16.engine", status="ok")
    export.engine_check(wrong, swapping)
    assert wrong.status == "failed" and wrong.notes[0].startswith("reference check: tokens: worst per-image cosine")
    assert "check" in wrong.to_dict() and "check" not in Variant(precision="fp32", format="onnx", file="m").to_dict()


def test_a_probe_that_does_not_fit_the_features_is_one_line(made, tmp_path):
    """A damaged reference the sha256 cannot see (the manifest edited along with it) is still one line."""
    import shutil

    folder = tmp_path / "bundle"
    shutil.copytree(made, folder)
    np.savez(folder / "reference_probe.npz", weight=np.zeros((DIM + 1, 2), "<f4"), bias=np.zeros(2, "<f4"))
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]["reference_probe.npz"]
    got = {r["name"]: OrtRunner(folder / "model.onnx")(np.zeros((r["batch"], 3, SIZE, SIZE), np.float32))
           for r in manifest["reference"]["runs"]}
    report = co.check(str(folder), manifest, "fp32", got)
    assert report["passed"] is False and len(report["problems"]) == 1
    assert report["problems"][0].startswith("manifest.json's reference does not fit its files (ValueError")
