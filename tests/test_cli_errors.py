"""Every bad input: one line naming the problem and the fix, exit code 2, nothing written.

A failed check exits 1 and an unexpected exception (a bug) exits 3, so that a crash never reads as
a missed budget.
"""


import pytest
from helpers import run_cli

from leapkit.errors import CHECK_FAILED_EXIT, INTERNAL_ERROR_EXIT, CheckFailed


@pytest.fixture
def base_args(teacher_file, image_dir, tmp_path):
    return ["distill", "--teacher-weights", str(teacher_file), "--img-size", "16", "--data", str(image_dir),
            "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "out"), "--no-progress"]


def with_flag(args, flag, value):
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--data", "/nonexistent/images", "data folder not found: /nonexistent/images"),
        ("--student", "vit_does_not_exist", "unknown timm model 'vit_does_not_exist' for the student"),
        ("--teacher", "vit_small_patch14_dinov2", "teacher weights teacher.safetensors do not fit the model"),
        ("--img-size", "18", "image size 18 is not divisible by the teacher's patch size 4; use --img-size 16 or 20"),
        ("--cka-threshold", "1.5", "curriculum.threshold must be in (0, 1], got 1.5"),
        ("--ema-alpha", "0", "curriculum.ema_alpha must be in (0, 1], got 0.0"),
        ("--epochs", "0", "train.epochs must be >= 1, got 0"),
        ("--batch-size", "0", "train.batch_size must be >= 1, got 0"),
        ("--max-epochs-per-block", "-1", "curriculum.max_epochs_per_block must be > 0"),
        ("--recipe", "no-such-recipe", "unknown recipe 'no-such-recipe'; known: demo"),
    ],
)
def test_bad_input(flag, value, message, base_args, tmp_path, monkeypatch, capsys):
    code, err = run_cli(with_flag(base_args, flag, value), monkeypatch, capsys)
    assert code == 2
    assert message in err
    assert err.strip().count("\n") == 0, err
    assert not (tmp_path / "out").exists()


def test_empty_data_folder(base_args, tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run_cli(with_flag(base_args, "--data", str(tmp_path / "empty")), monkeypatch, capsys)
    assert code == 2 and "no images" in err and "point --data at a folder of images" in err


def test_all_config_problems_reported_at_once(base_args, monkeypatch, capsys):
    args = with_flag(with_flag(base_args, "--epochs", "0"), "--cka-threshold", "2")
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and "train.epochs" in err and "curriculum.threshold" in err


def test_existing_run_is_not_overwritten(base_args, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, err = run_cli(base_args, monkeypatch, capsys)
    assert code == 2 and "already holds files; pass --resume" in err
    assert (out / "precious.txt").read_text() == "keep me"


def test_resume_with_nothing_to_resume(base_args, tmp_path, monkeypatch, capsys):
    code, err = run_cli(base_args + ["--resume"], monkeypatch, capsys)
    assert code == 2 and "run directory not found" in err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.yaml").write_text("recipe: demo\n")
    code, err = run_cli(base_args + ["--resume"], monkeypatch, capsys)
    assert code == 2 and "nothing to resume" in err


@pytest.mark.parametrize("existing_run", [True, False])
def test_resume_and_overwrite_conflict(existing_run, base_args, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    if existing_run:
        out.mkdir()
        (out / "config.yaml").write_text("recipe: demo\n")
    code, err = run_cli(base_args + ["--resume", "--overwrite"], monkeypatch, capsys)
    assert code == 2
    assert "--resume and --overwrite contradict each other; pass one of them" in err
    assert err.strip().count("\n") == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"] if existing_run else not out.exists()


def test_bad_choice_is_a_usage_error(base_args, monkeypatch, capsys):
    code, err = run_cli(base_args + ["--curriculum", "sometimes"], monkeypatch, capsys)
    assert code == 2 and "sometimes" in err


def _raise(error: Exception):
    def fail(*args, **kwargs):
        raise error

    return fail


def test_unexpected_exception_is_an_internal_error_exit_3(tmp_path, monkeypatch, capsys):
    import leapkit.flops

    monkeypatch.delenv("LEAPKIT_DEBUG", raising=False)
    monkeypatch.setattr(leapkit.flops, "run_flops", _raise(RuntimeError("boom")))
    code, err = run_cli(["flops", str(tmp_path)], monkeypatch, capsys)
    assert code == INTERNAL_ERROR_EXIT == 3
    assert err.strip() == ("internal error: RuntimeError: boom (a bug in leapkit: set LEAPKIT_DEBUG=1 for the "
                           "traceback and report it)")


def test_internal_error_shows_the_traceback_under_leapkit_debug(tmp_path, monkeypatch, capsys):
    import leapkit.flops

    monkeypatch.setenv("LEAPKIT_DEBUG", "1")
    monkeypatch.setattr(leapkit.flops, "run_flops", _raise(RuntimeError("boom")))
    code, err = run_cli(["flops", str(tmp_path)], monkeypatch, capsys)
    assert code == INTERNAL_ERROR_EXIT  # the same exit code as without LEAPKIT_DEBUG, the traceback added
    assert "Traceback (most recent call last)" in err and err.strip().endswith("traceback and report it)")


def test_failed_check_exits_1(tmp_path, monkeypatch, capsys):
    import leapkit.flops

    monkeypatch.delenv("LEAPKIT_DEBUG", raising=False)
    monkeypatch.setattr(leapkit.flops, "run_flops", _raise(CheckFailed("p99 12.0 ms is over the 10 ms budget")))
    code, err = run_cli(["flops", str(tmp_path)], monkeypatch, capsys)
    assert code == CHECK_FAILED_EXIT == 1
    assert err.strip() == "error: p99 12.0 ms is over the 10 ms budget"
