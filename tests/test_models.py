import pytest
import torch
from safetensors.torch import save_file

from leapkit.errors import ModelError
from leapkit.models import (
    TruncatedTeacher,
    check_pair,
    create_student,
    create_teacher,
    resize_tokens,
    student_tokens,
)


@pytest.mark.parametrize("name", ["leapkit_demo_teacher", "vit_small_patch14_reg4_dinov2"])
@pytest.mark.parametrize("k", [1, 3])
def test_truncated_teacher_equals_full_intermediate(name, k):
    torch.manual_seed(0)
    size = 16 if name.startswith("leapkit") else 28
    model = create_teacher(name, size, pretrained=False)
    x = torch.randn(2, 3, size, size)
    tokens = TruncatedTeacher(model)(x, k)
    patch, prefix = model.forward_intermediates(
        x, indices=[k - 1], norm=True, return_prefix_tokens=True, output_fmt="NLC", intermediates_only=True
    )[0]
    assert tokens.patch.shape == patch.shape
    torch.testing.assert_close(tokens.patch, patch)
    torch.testing.assert_close(tokens.cls, prefix[:, 0])
    assert model.num_prefix_tokens == (5 if "reg4" in name else 1)
    last = TruncatedTeacher(model).all_blocks(x)[k - 1]
    torch.testing.assert_close(last.patch, patch)


def test_truncated_teacher_block_range():
    t = TruncatedTeacher(create_teacher("leapkit_demo_teacher", 16, pretrained=False))
    with pytest.raises(ValueError, match="out of range 1..8"):
        t(torch.randn(1, 3, 16, 16), 9)


def test_student_tokens_are_final_normalised():
    s = create_student("leapkit_demo_student", 16).eval()
    x = torch.randn(2, 3, 16, 16)
    tokens = student_tokens(s, x)
    assert tokens.patch.shape == (2, 16, 32) and tokens.cls.shape == (2, 32)
    torch.testing.assert_close(tokens.cls, s.forward_features(x)[:, 0])


def test_resize_tokens_bilinear():
    t = torch.arange(4.0).reshape(1, 4, 1)  # a 2x2 grid
    out = resize_tokens(t, (2, 2), (4, 4))
    assert out.shape == (1, 16, 1)
    assert out.min() == 0 and out.max() == 3
    assert resize_tokens(t, (2, 2), (2, 2)) is t


def test_load_weights_round_trip(tmp_path):
    a = create_teacher("leapkit_demo_teacher", 16, pretrained=False)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, str(path))
    b = create_teacher("leapkit_demo_teacher", 16, weights=str(path))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)


def test_weights_resampled_to_other_resolution(tmp_path):
    a = create_teacher("leapkit_demo_teacher", 16, pretrained=False)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, str(path))
    b = create_teacher("leapkit_demo_teacher", 32, weights=str(path))
    assert b.pos_embed.shape[1] == 1 + 64


def test_weights_of_wrong_model_rejected(tmp_path):
    s = create_student("leapkit_demo_student", 16)
    path = tmp_path / "student.safetensors"
    save_file({k: v.contiguous() for k, v in s.state_dict().items()}, str(path))
    with pytest.raises(ModelError, match="do not fit the model.*wrong shape"):
        create_teacher("leapkit_demo_teacher", 16, weights=str(path))


def test_bad_weight_files(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        create_teacher("leapkit_demo_teacher", 16, weights=str(tmp_path / "missing.safetensors"))
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(ModelError, match="must be a .safetensors file"):
        create_teacher("leapkit_demo_teacher", 16, weights=str(tmp_path / "w.pt"))
    (tmp_path / "w.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ModelError, match="not valid safetensors"):
        create_teacher("leapkit_demo_teacher", 16, weights=str(tmp_path / "w.safetensors"))


def test_unknown_model_name():
    with pytest.raises(ModelError, match="unknown timm model 'vit_nonexistent'"):
        create_student("vit_nonexistent", 16)
    with pytest.raises(ModelError, match="not a timm VisionTransformer|not a ViT"):
        create_student("resnet18", 32)


def test_hub_failure_says_use_local_weights(monkeypatch):
    import timm

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ModelError, match="--teacher-weights FILE"):
        create_teacher("vit_small_patch14_dinov2.lvd142m", 28)


def test_pair_grids():
    t = create_teacher("vit_small_patch14_dinov2", 28, pretrained=False)
    s = create_student("leapkit_demo_student", 28)
    check_pair(t, s, 28)  # 2x2 teacher grid vs 7x7 student grid: resizable
    with pytest.raises(ModelError, match="not divisible by the teacher's patch size 14; use --img-size 28 or 42"):
        check_pair(t, s, 30)
