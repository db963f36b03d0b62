import pytest

from leapkit.config import Config, apply, list_recipes, load_config, resolve_config, save_config
from leapkit.errors import ConfigError


def test_every_shipped_recipe_resolves_cleanly():
    assert {"demo", "imagenet100-vits14-from-vitg14", "imagenet100-vitt14-from-vitg14", "imagenet1k-vits14-from-vitg14"} <= set(list_recipes())
    for name in list_recipes():
        cfg = resolve_config(name)
        assert cfg.problems() == [], name
        assert cfg.recipe == name


def test_paper_recipes_carry_the_published_settings():
    cfg = resolve_config("imagenet100-vits14-from-vitg14")
    assert cfg.model.teacher.startswith("vit_giant_patch14_dinov2")
    assert (cfg.model.img_size, cfg.train.epochs, cfg.train.batch_size) == (224, 100, 256)
    assert (cfg.curriculum.threshold, cfg.curriculum.ema_alpha, cfg.curriculum.max_epochs_per_block, cfg.curriculum.cls_weight) == (0.85, 1.0, 5, 0.05)
    assert resolve_config("imagenet1k-vits14-from-vitg14").curriculum.threshold == 0.8


def test_overrides_win_over_the_recipe():
    cfg = resolve_config("demo", {"train": {"epochs": 3}, "curriculum": {"threshold": 0.5}})
    assert cfg.train.epochs == 3 and cfg.curriculum.threshold == 0.5
    assert cfg.model.teacher == "leapkit_demo_teacher"


def test_round_trip(tmp_path):
    cfg = resolve_config("demo", {"curriculum": {"snap_to_last_at": 3}})
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize(
    "delta,message",
    [
        ({"curriculm": {}}, "unknown section 'curriculm'"),
        ({"train": {"epoch": 3}}, "unknown key 'train.epoch'"),
        ({"train": {"epochs": 2.5}}, "train.epochs must be an integer"),
        ({"train": {"epochs": "ten"}}, "train.epochs must be an integer"),
        ({"curriculum": {"mode": "fast"}}, "curriculum.mode must be one of leap, baseline"),
        ({"data": {"crop_scale": [0.5]}}, "data.crop_scale must be a list of 2 numbers"),
        ({"train": {"eval_at_end": "yes"}}, "train.eval_at_end must be true or false"),
        ({"model": {"img_size": None}}, "model.img_size cannot be null"),
    ],
)
def test_type_errors_name_the_key(delta, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        apply(Config(), delta, origin="test")


def test_problems_lists_everything():
    cfg = apply(Config(), {"train": {"epochs": 0, "batch_size": 0}, "curriculum": {"threshold": 0}}, origin="test")
    text = "; ".join(cfg.problems())
    for key in ("train.epochs", "train.batch_size", "curriculum.threshold", "data.path is not set"):
        assert key in text


def test_recipe_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        resolve_config(str(bad))
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        resolve_config(str(bad))
