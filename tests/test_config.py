import pytest

from leapkit.config import (
    Config,
    apply,
    list_recipes,
    load_config,
    parse_set,
    recipe_problems,
    resolve_config,
    save_config,
)
from leapkit.errors import ConfigError


def test_every_shipped_recipe_resolves_cleanly():
    shipped = {"demo", "imagenet100-vits14-from-vitg14", "imagenet100-vitt14-from-vitg14",
               "imagenet1k-vits14-from-vitg14"}
    assert shipped <= set(list_recipes())
    for name in list_recipes():
        cfg = resolve_config(name)
        assert cfg.problems() == [], name
        assert cfg.recipe == name


def test_paper_recipes_carry_the_published_settings():
    cfg = resolve_config("imagenet100-vits14-from-vitg14")
    assert cfg.model.teacher.startswith("vit_giant_patch14_dinov2")
    assert (cfg.model.img_size, cfg.train.epochs, cfg.train.batch_size) == (224, 100, 256)
    c = cfg.curriculum
    assert (c.threshold, c.ema_alpha, c.max_epochs_per_block, c.cls_weight) == (0.85, 1.0, 5, 0.05)
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
        ({"curriculum": {"mode": "fast"}}, "curriculum.mode must be one of leap|baseline"),
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


def test_apply_reports_every_problem_at_once():
    delta = {"curriculm": {}, "train": {"epoch": 3, "batch_size": "big"}, "optim": {"name": "sgd"}}
    with pytest.raises(ConfigError) as e:
        apply(Config(), delta, origin="test")
    text = str(e.value)
    assert "\n" not in text
    for needle in ("test: unknown section 'curriculm' (did you mean 'curriculum'?)",
                   "test: unknown key 'train.epoch' (did you mean 'train.epochs'?)",
                   "test: train.batch_size must be an integer, got 'big'",
                   "test: optim.name must be one of adamw|lars, got 'sgd'",
                   "data.path is not set"):
        assert needle in text


def test_unknown_key_without_a_close_match_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown key 'train\.zzz'; known: epochs, batch_size"):
        apply(Config(), {"train": {"zzz": 1}}, origin="test")


def test_recipe_with_three_typos_reports_all_three(tmp_path):
    recipe = tmp_path / "typos.yaml"
    recipe.write_text("train:\n  epoch: 3\n  batchsize: 8\ncurriculum:\n  treshold: 0.5\n  ema_alpha: 2\n")
    problems = recipe_problems(str(recipe))
    assert problems[:3] == [
        "unknown key 'train.epoch' (did you mean 'train.epochs'?)",
        "unknown key 'train.batchsize' (did you mean 'train.batch_size'?)",
        "unknown key 'curriculum.treshold' (did you mean 'curriculum.threshold'?)",
    ]
    assert any(p.startswith("curriculum.ema_alpha must be in (0, 1], got 2") for p in problems)
    with pytest.raises(ConfigError) as e:
        resolve_config(str(recipe), {"train": {"sed": 1}})
    text = str(e.value)
    assert text.count("unknown key") == 4
    assert "command line: unknown key 'train.sed' (did you mean 'train.seed'?)" in text


def test_value_problems_alone_are_left_to_validate():
    cfg = resolve_config("demo", {"train": {"epochs": 0}})
    with pytest.raises(ConfigError, match=r"^train\.epochs must be >= 1, got 0 \(--epochs\)$"):
        cfg.validate()


@pytest.mark.parametrize(
    "items,delta",
    [
        (["train.epochs=3"], {"train": {"epochs": 3}}),
        (["optim.lr=1e-3", "optim.clip_grad=null"], {"optim": {"lr": 1e-3, "clip_grad": None}}),
        (["data.crop_scale=[0.5, 1.0]", "data.augment=false"], {"data": {"crop_scale": [0.5, 1.0], "augment": False}}),
        (["model.student=vit_tiny_patch16_224", "train.device=cuda:0"],
         {"model": {"student": "vit_tiny_patch16_224"}, "train": {"device": "cuda:0"}}),
        (["train.epochs=2", "train.epochs=5"], {"train": {"epochs": 5}}),
        (["model.teacher_weights="], {"model": {"teacher_weights": ""}}),
    ],
)
def test_parse_set(items, delta):
    assert parse_set(items) == delta


def test_parse_set_values_go_through_apply():
    cfg = resolve_config("demo", parse_set(["optim.lr=1e-3", "curriculum.mode=baseline", "data.crop_scale=[0.5, 1]"]))
    assert cfg.optim.lr == 1e-3 and cfg.curriculum.mode == "baseline" and cfg.data.crop_scale == (0.5, 1.0)
    with pytest.raises(ConfigError, match=r"command line: train\.epochs must be an integer, got 'many'"):
        resolve_config("demo", parse_set(["train.epochs=many"]))


@pytest.mark.parametrize("item", ["epochs=3", "train.epochs", "train.=3", ".epochs=3", "a.b.c=1"])
def test_parse_set_rejects_malformed_items(item):
    with pytest.raises(ConfigError, match=r"is not of the form section\.key=value \(e\.g\. --set optim\.lr=1e-3\)"):
        parse_set([item])


def test_lr_scaling_is_an_option_recorded_in_config_yaml(tmp_path):
    assert Config().optim.scale_lr is False
    cfg = resolve_config("demo", parse_set(["optim.scale_lr=true"]))
    save_config(cfg, tmp_path / "config.yaml")
    assert "scale_lr: true" in (tmp_path / "config.yaml").read_text()
    assert load_config(tmp_path / "config.yaml").optim.scale_lr is True


def test_train_log_is_one_of_its_backends_and_auto_by_default():
    assert resolve_config("demo").train.log == "auto"
    assert resolve_config("demo", {"train": {"log": "none"}}).train.log == "none"
    with pytest.raises(ConfigError, match=r"command line: train\.log must be one of auto\|tensorboard\|none, got 'tb'"):
        resolve_config("demo", {"train": {"log": "tb"}})
