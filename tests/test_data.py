"""leapkit.data: the fast training path against the plain one, unreadable files, and the data wait record."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from torchvision import tv_tensors
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

import leapkit
from leapkit.config import resolve_config
from leapkit.data import (
    DATA_WAIT_WARN,
    BatchNormalize,
    CropBox,
    CropDecoder,
    DataWait,
    EpochSeeded,
    ImageFolderDataset,
    Unreadable,
    collate,
    draft_scale,
    jpeg_frame,
    resolve_workers,
    sample_crop_box,
)
from leapkit.errors import ConfigError, DataError
from leapkit.run import RunSummary, read_metrics
from leapkit.trainer import Trainer

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def photo(height: int, width: int, seed: int = 0) -> Image.Image:
    """A smooth colour image (JPEG-friendly, like a photo's low frequencies) with some texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(2 * np.pi * (f * x + g * y)) for f, g in rng.uniform(0.5, 3.0, (3, 2))]
    img = (np.stack(channels, -1) * 100 + 128 + rng.normal(0, 6, (height, width, 3))).clip(0, 255)
    return Image.fromarray(img.astype(np.uint8))


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def box_stats(boxes: list[CropBox], height: int, width: int) -> dict[str, np.ndarray]:
    """Area fraction, log aspect ratio and relative centre of each box."""
    return {
        "scale": np.array([b.height * b.width / (height * width) for b in boxes]),
        "log_ratio": np.array([math.log(b.width / b.height) for b in boxes]),
        "cx": np.array([(b.left + b.width / 2) / width for b in boxes]),
        "cy": np.array([(b.top + b.height / 2) / height for b in boxes]),
    }


def torchvision_boxes(n: int, height: int, width: int, scale: tuple[float, float]) -> list[CropBox]:
    """The boxes of the plain path: torchvision's RandomResizedCrop on an image of that size."""
    rrc = T.RandomResizedCrop(224, scale=scale, antialias=True)
    image = tv_tensors.Image(torch.zeros(3, height, width, dtype=torch.uint8))
    params = [rrc.make_params([image]) for _ in range(n)]
    return [CropBox(p["top"], p["left"], p["height"], p["width"]) for p in params]


@pytest.mark.parametrize(("height", "width", "scale"), [(375, 500, (0.32, 1.0)), (500, 375, (0.08, 1.0))])
def test_crop_boxes_have_the_statistics_of_the_plain_path(height, width, scale):
    torch.manual_seed(0)
    plain = box_stats(torchvision_boxes(3000, height, width, scale), height, width)
    torch.manual_seed(1)
    fast = box_stats([sample_crop_box(height, width, scale) for _ in range(3000)], height, width)
    for key in plain:
        assert ks_2samp(plain[key], fast[key]).pvalue > 0.01, key
    assert fast["scale"].min() >= scale[0] - 0.01 and fast["scale"].max() <= 1.0
    # the comparison has the power to see a wrong rule: uniform (not log-uniform) ratios, a narrower scale range
    torch.manual_seed(2)
    narrower = box_stats([sample_crop_box(height, width, (scale[0] + 0.1, 1.0)) for _ in range(3000)], height, width)
    assert ks_2samp(plain["scale"], narrower["scale"]).pvalue < 1e-6


def test_the_fallback_box_is_the_centre_crop_clamped_to_the_ratio():
    # a 1 x 100 strip: no draw fits, so the box is the centre crop at the widest allowed ratio
    box = sample_crop_box(1, 100, (0.9, 1.0))
    assert box == CropBox(0, 49, 1, 1)


def test_draft_scale_never_shrinks_the_crop_below_the_output():
    assert draft_scale(CropBox(0, 0, 375, 500), 224) == 1
    assert draft_scale(CropBox(0, 0, 450, 900), 224) == 2
    assert draft_scale(CropBox(0, 0, 1000, 1000), 112) == 8
    assert draft_scale(CropBox(0, 0, 447, 2000), 224) == 1


@pytest.mark.parametrize(
    ("size", "out", "reduction"), [((375, 500), 96, 2), ((375, 500), 224, 1), ((750, 1000), 64, 8)]
)
def test_the_fast_path_crops_what_the_plain_decode_would(tmp_path, size, out, reduction):
    """Same box, same resize: the fast path's image differs from a full PIL decode by the decode alone."""
    height, width = size
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(photo(height, width)))
    decoder = CropDecoder(out, crop_scale=(0.9, 1.0), hflip=0.0)
    torch.manual_seed(3)
    fast = decoder(path)
    torch.manual_seed(3)
    box, s = decoder.box(height, width)
    assert s == reduction
    full = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    plain = TF.resized_crop(full, box.top, box.left, box.height, box.width, [out, out], antialias=True)
    assert fast.dtype == torch.uint8 and fast.shape == (3, out, out)
    diff = (fast.float() - plain.float()).abs().mean().item()
    assert diff < (0.5 if reduction == 1 else 3.0), diff  # libjpeg-turbo whole: PIL's pixels; reduced: its DCT scaling
    shifted = TF.resized_crop(full, box.top, box.left + box.width // 8, box.height, box.width, [out, out])
    assert (shifted.float() - plain.float()).abs().mean().item() > 20.0  # a box off by 1/8 of its width would show


def test_the_frame_header_gives_what_pil_reads(tmp_path):
    img = photo(37, 53)
    exif = Image.Exif()
    exif[0x010E] = "a description long enough to push the frame header further into the file"
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes(), progressive=True)
    assert jpeg_frame(buf.getvalue()) == (37, 53, 3)
    assert jpeg_frame(jpeg_bytes(img.convert("L"))) == (37, 53, 1)
    assert jpeg_frame(jpeg_bytes(img.convert("CMYK"))) == (37, 53, 4)
    png = io.BytesIO()
    img.save(png, "PNG")
    assert jpeg_frame(png.getvalue()) is None and jpeg_frame(b"\xff\xd8\xff") is None


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grey_and_cmyk_jpegs_come_out_rgb(tmp_path, mode):
    path = tmp_path / "p.jpg"
    path.write_bytes(jpeg_bytes(photo(40, 60).convert(mode)))
    x = CropDecoder(16)(path)
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8


def test_batch_normalize_matches_torchvision_normalize():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    reference = T.Normalize(MEAN, STD)(T.ToDtype(torch.float32, scale=True)(x))
    assert torch.allclose(BatchNormalize(MEAN, STD)(x), reference, atol=1e-5)
    assert BatchNormalize(MEAN, STD)(reference) is reference  # float batches (digits, pil path) pass as they are


def test_a_corrupt_jpeg_is_skipped_and_counted_on_the_fast_path(tmp_path):
    good = jpeg_bytes(photo(60, 80))
    (tmp_path / "a.jpg").write_bytes(good)
    (tmp_path / "b_cut.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "c_junk.jpg").write_bytes(b"\xff\xd8" + b"not a jpeg" * 20)
    photo(30, 40).save(tmp_path / "d.png")
    data = ImageFolderDataset(tmp_path, decoder=CropDecoder(16), batch_transform=BatchNormalize(MEAN, STD))
    batch = collate([data[i] for i in range(len(data))])
    assert [data[i] for i in (1, 2)] == [Unreadable(1), Unreadable(2)]
    assert batch.images.shape == (2, 3, 16, 16) and batch.images.dtype == torch.uint8
    assert batch.skipped == 2 and batch.unreadable == (1, 2)



@pytest.mark.parametrize("decode", ["fast", "pil"])
def test_an_image_over_the_pixel_limit_is_skipped_before_it_is_decoded(decode, tmp_path, monkeypatch):
    photo(60, 80).save(tmp_path / "a_big.jpg", quality=90)  # 4800 pixels: a bomb under a 2000-pixel limit
    photo(20, 30).save(tmp_path / "b_small.jpg", quality=90)
    photo(60, 80).save(tmp_path / "c_big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses over twice this
    decoded: list[int] = []
    real = leapkit.data.decode_jpeg
    monkeypatch.setattr("leapkit.data.decode_jpeg", lambda data, **k: decoded.append(len(data)) or real(data, **k))
    if decode == "fast":
        data = ImageFolderDataset(tmp_path, decoder=CropDecoder(16), batch_transform=BatchNormalize(MEAN, STD))
    else:
        data = ImageFolderDataset(tmp_path, T.Compose([T.ToImage(), T.Resize((16, 16))]))
    assert data[0] == Unreadable(0) and data[2] == Unreadable(2)
    assert decoded == []  # the big JPEG never reached a decoder
    assert not isinstance(data[1], Unreadable) and len(decoded) == (decode == "fast")
    data.check_readable()  # one readable image is enough
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="no readable image"):
        data.check_readable()

def test_workers_auto_is_the_process_share_of_the_cpus_less_one(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_workers("auto") == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert resolve_workers("auto") == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert resolve_workers("auto") == 0
    assert resolve_workers(5) == 5


def test_workers_take_auto_and_refuse_the_rest():
    assert resolve_config("demo", {"data": {"workers": "auto"}}).data.workers == "auto"
    with pytest.raises(ConfigError, match=r"data.workers must be an integer or one of auto, got 'many'"):
        resolve_config("demo", {"data": {"workers": "many"}})
    with pytest.raises(ConfigError, match=r"data.workers must be >= 0 or auto, got -1"):
        resolve_config("demo", {"data": {"workers": -1}}).validate()


def test_the_workers_flag_is_a_one_line_usage_error(monkeypatch, capsys):
    from helpers import run_cli

    code, err = run_cli(["distill", "--workers", "-2"], monkeypatch, capsys)
    assert code == 2
    assert "--workers must be an integer >= 0 or auto, got '-2'" in err and len(err.strip().splitlines()) == 1


def test_a_sample_is_augmented_from_its_epoch_seed_and_index_alone(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(jpeg_bytes(photo(60, 80, seed=i)))
    data = EpochSeeded(ImageFolderDataset(tmp_path, decoder=CropDecoder(16, (0.1, 1.0))))
    data.set_seed(7)
    first = [data[i][0] for i in (2, 0, 1)]
    torch.manual_seed(123)  # whatever the process's own stream
    again = [data[i][0] for i in (0, 1, 2)]
    assert all(torch.equal(a, b) for a, b in zip(first, [again[2], again[0], again[1]], strict=True))
    data.set_seed(8)
    assert not torch.equal(data[0][0], again[0])


def test_every_step_and_the_summary_record_the_data_wait(tiny_config, tmp_path):
    tiny_config.train.epochs = 2  # the second epoch reuses the first's persistent loader worker
    tiny_config.data.workers = 1
    summary = leapkit.distill(tiny_config, out=tmp_path / "run", show_progress=False)
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 6 and all(0.0 <= r["data_wait_frac"] <= 1.0 for r in rows)
    assert 0.0 <= summary.data_wait_frac <= 1.0
    assert RunSummary.load(tmp_path / "run" / "summary.json").data_wait_frac == summary.data_wait_frac


def trainer_stub(decode: str, workers: int) -> SimpleNamespace:
    cfg = resolve_config("demo", {"data": {"source": "folder", "path": "x", "decode": decode}})
    return SimpleNamespace(cfg=cfg, dist=SimpleNamespace(is_main=True), workers=workers, data_wait=DataWait(),
                           data_wait_warned=False)


def test_a_loader_bound_epoch_is_warned_about_once_naming_the_fix(caplog):
    stub = trainer_stub("pil", 2)
    stub.data_wait.add(wait_s=0.1, step_s=1.0)  # 10%: no warning
    Trainer.check_data_wait(stub, 0)
    assert not caplog.records
    stub.data_wait.add(wait_s=0.3, step_s=1.0)
    Trainer.check_data_wait(stub, 1)
    stub.data_wait.add(wait_s=0.9, step_s=1.0)
    Trainer.check_data_wait(stub, 2)
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert record.message.startswith(
        f"the steps of epoch 2 waited for data 30% of their time (over {DATA_WAIT_WARN:.0%}): the loader"
    )
    assert "raise --workers (2 now; --workers auto:" in record.message
    assert record.message.endswith("and decode with the fast path (--set data.decode=fast)")


def test_in_process_loading_is_named_as_such(caplog):
    stub = trainer_stub("fast", 0)
    stub.data_wait.add(wait_s=0.5, step_s=1.0)
    Trainer.check_data_wait(stub, 0)
    [record] = caplog.records
    assert "the images are loaded in the training process: give it loader workers (--workers auto" in record.message
    assert "data.decode" not in record.message


def test_the_fast_path_is_the_default_for_folders_and_pil_stays_available(tiny_config):
    from leapkit.models import normalization
    from leapkit.train import build_train_set

    fast = build_train_set(tiny_config, *normalization(tiny_config.model.teacher))
    assert isinstance(fast.decoder, CropDecoder) and isinstance(fast.batch_transform, BatchNormalize)
    tiny_config.data.decode = "pil"
    plain = build_train_set(tiny_config, *normalization(tiny_config.model.teacher))
    assert plain.decoder is None and plain[0][0].dtype == torch.float32

