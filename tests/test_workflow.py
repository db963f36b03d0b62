"""The example GitHub Actions workflow, .github/workflows/latency.yml: valid for GitHub, and every command in it runs.

actionlint reads the file as GitHub would (and fails a broken copy of it). Then the workflow runs here as two
runs on main would: each job in a folder of its own, artifacts copied between jobs by its upload and download
steps, every `leapkit` line through the real entry point, and the Jetson's bundle scripts against the stand-in
trtexec of tests/fixtures (it replays a published Orin Nano log, TensorRT 8.5.2). The first run has no baseline;
the second starts from the first's folders, fetches the first's bench JSON as its baseline and runs what the first
skipped.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from junitparser import JUnitXml

from leapkit.host import cpu_bf16
from leapkit.profiles import load_target
from leapkit.runtimes.openvino_runner import openvino_installed

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "latency.yml"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAMPLES = ROOT.parent / "shared" / "trtexec-samples"
ORIN_NANO_LOG = "trt8.5.2-orin-nano-yolox-fp16-summary.log"  # JetPack 5.1 on a Jetson Orin Nano
# What the jobs' `if:` expressions read: a push to main of this repository.
GITHUB = {"github.ref": "refs/heads/main", "github.event_name": "push", "github.repository": "owner/leapkit",
          "github.event.pull_request.head.repo.full_name": ""}


def actionlint() -> str | None:
    return shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))


def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def lines(script: str) -> list[str]:
    """A `run:` script's commands, one per line (continuations joined, comments dropped)."""
    joined = script.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def leapkit_lines(wf: dict[str, Any]) -> list[str]:
    return [line for job in wf["jobs"].values() for step in job["steps"] for line in lines(step.get("run", ""))
            if line.startswith("leapkit ")]


def lint(path: Path) -> subprocess.CompletedProcess:
    config = ROOT / ".github" / "actionlint.yaml"  # names the self-hosted runner's label, jetson
    return subprocess.run([actionlint(), "-no-color", "-config-file", str(config), str(path)], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(actionlint() is None, reason="actionlint is not installed (the dev extra brings it)")
def test_actionlint_accepts_the_workflow_and_rejects_a_broken_copy(tmp_path):
    r = lint(WORKFLOW)
    assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "latency.yml"
    broken.write_text(WORKFLOW.read_text().replace("hashFiles('baseline/x86-cpu.json') != ''",
                                                   "hashFile('baseline/x86-cpu.json') != ''", 1))
    r = lint(broken)
    assert r.returncode == 1 and 'undefined function "hashFile"' in r.stdout, r.stdout + r.stderr


def test_the_workflow_benches_x86_on_the_hosted_runner_and_the_jetson_on_the_device():
    jobs = workflow()["jobs"]
    assert jobs["x86-cpu"]["runs-on"].startswith("ubuntu-")
    assert jobs["jetson-device"]["runs-on"] == ["self-hosted", "jetson"]
    benches = [line for line in leapkit_lines(workflow()) if line.startswith("leapkit bench")]
    assert len(benches) == 4 and all("--junit reports/" in b for b in benches)
    assert [b for b in benches if "jetson-orin-nano" in b] == [b for b in benches if "--require-measured" in b]
    assert sum("--baseline" in b for b in benches) == 2
    steps = [s for job in jobs.values() for s in job["steps"]]
    uploads = {s["with"]["name"] for s in steps if "upload-artifact" in s.get("uses", "")}
    downloads = {s["with"]["name"] for s in steps if "download-artifact" in s.get("uses", "")}
    assert downloads <= uploads and {"latency-baseline-x86-cpu", "latency-baseline-jetson-orin-nano"} <= downloads


@dataclass
class Runner:
    """Runs the workflow's jobs in folders under ``root``, as GitHub's runners would, with its artifacts copied."""

    root: Path
    artifacts: dict[int, dict[str, Path]] = field(default_factory=dict)
    done: set[tuple[str, int]] = field(default_factory=set)  # (job, step) whose commands ran
    ran: list[tuple[int, str, str, subprocess.CompletedProcess]] = field(default_factory=list)
    published: dict[str, Path] = field(default_factory=dict)

    def env(self, cwd: Path) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)  # leapkit, and the python3 with numpy that check_engine.sh runs
        return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                "TRTEXEC": str(FIXTURES / "trtexec"), "LEAPKIT_TRTEXEC_FIXTURES": str(SAMPLES),
                # The device replays a published Orin Nano log: a log from another GPU leaves the budget unconfirmed.
                "LEAPKIT_TRTEXEC_LOG": ORIN_NANO_LOG,
                "GITHUB_STEP_SUMMARY": str(cwd / "step_summary.md")}

    def holds(self, condition: str | None, cwd: Path, failed: bool) -> bool:
        """An `if:` expression: hashFiles, !cancelled(), the github context of a push to main, &&, ||, !, ==, !=."""
        if condition is None:
            return not failed
        expr = condition.strip().removeprefix("${{").removesuffix("}}").strip()
        status = "cancelled()" in expr
        expr = re.sub(r"hashFiles\('([^']+)'\)", lambda m: repr("#" if (cwd / m.group(1)).exists() else ""), expr)
        expr = re.sub(r"github(\.\w+)+", lambda m: repr(GITHUB[m.group(0)]), expr)
        expr = expr.replace("!cancelled()", "True").replace("&&", " and ").replace("||", " or ")
        expr = re.sub(r"!(?!=)", " not ", expr)
        value = eval(expr, {"__builtins__": {}})  # the workflow's own expressions, in the subset above
        return bool(value) and (status or not failed)

    def upload(self, run: int, cwd: Path, name: str, paths: str) -> None:
        store = self.root / "artifacts" / f"run{run}" / name
        found = [cwd / p for p in paths.split() if (cwd / p).exists()]
        for path in found:
            dest = store if len(found) == 1 else store / path.relative_to(cwd)
            if path.is_dir():
                shutil.copytree(path, dest, dirs_exist_ok=True)
            else:
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, dest)
        self.artifacts.setdefault(run, {})[name] = store

    def download(self, store: Path | None, cwd: Path, path: str) -> bool:
        if store is None:
            return False
        shutil.copytree(store, cwd / path, dirs_exist_ok=True)
        return True

    def command(self, run: int, job: str, line: str, cwd: Path) -> subprocess.CompletedProcess:
        if line.startswith("leapkit "):
            argv = [sys.executable, "-m", "leapkit", *shlex.split(line)[1:]]
        elif line.startswith("bash "):
            argv = shlex.split(line)
        else:
            raise AssertionError(f"{job}: a command this test does not know how to run: {line}")
        done = subprocess.run(argv, cwd=cwd, env=self.env(cwd), capture_output=True, text=True, timeout=600)
        self.ran.append((run, job, line, done))
        return done

    def job(self, run: int, name: str, job: dict[str, Any], previous: Path | None) -> None:
        workspace = self.root / f"run{run}" / name
        if previous is not None:
            shutil.copytree(previous, workspace, symlinks=True)
        workspace.mkdir(parents=True, exist_ok=True)
        failed = False
        for i, step in enumerate(job["steps"]):
            if not self.holds(step.get("if"), workspace, failed):
                continue
            uses, given = step.get("uses", ""), step.get("with", {})
            if uses.startswith("actions/upload-artifact"):
                self.upload(run, workspace, given["name"], given["path"])
            elif uses.startswith("actions/download-artifact"):
                failed |= not self.download(self.artifacts.get(run, {}).get(given["name"]), workspace, given["path"])
            elif uses.startswith("dawidd6/action-download-artifact"):  # the newest earlier run that uploaded it
                earlier = [self.artifacts[r][given["name"]] for r in sorted(self.artifacts, reverse=True)
                           if r < run and given["name"] in self.artifacts[r]]
                self.download(earlier[0] if earlier else None, workspace, given["path"])
            elif uses.startswith("dorny/test-reporter"):
                self.published[f"run{run} {given['name']}"] = workspace / given["path"]
            elif "run" in step and (name, i) not in self.done:
                cwd = workspace / step.get("working-directory", ".")
                for line in lines(step["run"]):
                    if line.startswith("pip install"):
                        continue  # this environment is the installed leapkit
                    if self.command(run, name, line, cwd).returncode != 0:
                        failed = True
                        break
                self.done.add((name, i))


@pytest.mark.slow
@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/trtexec-samples is absent (the stand-in replays it)")
def test_every_command_of_the_workflow_runs_on_a_tiny_run(tmp_path):
    wf = workflow()
    runner = Runner(tmp_path)
    for run in (1, 2):
        for name, job in wf["jobs"].items():
            runner.job(run, name, job, tmp_path / "run1" / name if run == 2 else None)

    assert {line for _, _, line, _ in runner.ran if line.startswith("leapkit ")} == set(leapkit_lines(wf))
    for run, job, line, done in runner.ran:
        noise = "--baseline baseline/x86-cpu.json" in line and done.stderr.startswith(
            "error: latency regression on x86-cpu")  # a live timing's change is never asserted on
        assert done.returncode == 0 or noise, f"run {run}, {job}: {line}\n{done.stderr[-3000:]}"

    x86 = tmp_path / "run2" / "x86-cpu"
    first, second = (tmp_path / f"run{n}" / "x86-cpu" / "runs" / "ci" / "bench" / "x86-cpu.json" for n in (1, 2))
    assert "baseline" not in first.read_text()
    assert '"path": "baseline/x86-cpu.json"' in second.read_text()
    assert "### leapkit bench x86-cpu" in (x86 / "step_summary.md").read_text()
    jetson = tmp_path / "run2" / "jetson-orin-nano"
    report = (jetson / "reports" / "bench" / "jetson-orin-nano.json").read_text()
    assert '"evidence": "imported"' in report and '"change": "same"' in report  # the same trtexec figures twice
    assert "## Per-layer profile" in (jetson / "reports" / "bench" / "jetson-orin-nano.md").read_text()
    assert sorted(runner.published) == ["run1 latency jetson-orin-nano", "run1 latency x86-cpu",
                                        "run2 latency jetson-orin-nano", "run2 latency x86-cpu"]
    # x86-cpu benches PyTorch and every precision of its profile the export wrote here (bf16 and the OpenVINO IRs
    # only with openvino); the Jetson's evidence is the one imported trtexec run
    x86_cpu = load_target("x86-cpu")
    onnx = [f"ONNX {p}" for p in x86_cpu.precisions if p != "bf16"]
    openvino = [f"OpenVINO {p}" for p in x86_cpu.precisions if openvino_installed() and (p != "bf16" or cpu_bf16())]
    for key, path in runner.published.items():
        names = [case.name for suite in JUnitXml.fromfile(str(path)) for case in suite]
        if key.endswith("x86-cpu"):
            assert names[0] == "PyTorch eager" and sorted(names[1:]) == sorted(onnx + openvino), (path, names)
        else:
            assert names == ["TensorRT engine fp16"], (path, names)
