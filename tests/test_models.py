"""Models: shapes, sizes, the option-A shortcut, the registry and checkpoint handling."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch import nn

from prune_gym.errors import CheckpointError, InvalidArgumentError, PruneGymError
from prune_gym.models import (
    KNOWN_CHECKPOINTS,
    CifarResNet,
    PadShortcut,
    download_checkpoint,
    file_sha256,
    get_model,
    list_models,
    load_checkpoint,
    resnet20,
    resnet56,
    verify_sha256,
)
from tests.shared_data import RESNET20_CKPT, RESNET56_CKPT, needs_shared


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_shape(name: str) -> None:
    model = get_model(name, num_classes=7).eval()
    x = torch.randn(2, 1, 8, 8) if name.startswith("digits") else torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_list_models_has_the_documented_names() -> None:
    names = set(list_models())
    assert {"resnet20", "resnet56", "vgg16_bn", "vgg19_bn", "mobilenetv2", "digits_cnn",
            "digits_resnet"} <= names


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet20", 269_722), ("resnet32", 464_154), ("resnet44", 658_586),
     ("resnet56", 853_018), ("resnet110", 1_727_962)],
)
def test_cifar_resnet_parameter_counts_match_the_paper(name: str, expected: int) -> None:
    # He et al. 2016, Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
    assert n_params(get_model(name)) == expected


def test_vgg_and_mobilenet_sizes() -> None:
    assert 14.5e6 < n_params(get_model("vgg16_bn")) < 15.0e6
    assert 19.8e6 < n_params(get_model("vgg19_bn")) < 20.3e6
    assert 2.1e6 < n_params(get_model("mobilenetv2")) < 2.4e6
    assert n_params(get_model("digits_cnn")) < 50_000


def test_mobilenetv2_has_depthwise_convs_and_residuals() -> None:
    model = get_model("mobilenetv2")
    depthwise = [m for m in model.modules()
                 if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    assert len(depthwise) == 17
    assert sum(getattr(m, "use_residual", False) for m in model.modules()) == 10
    half = get_model("mobilenetv2", width_mult=0.5)
    assert n_params(half) < n_params(model) / 2


def test_resnet_layout_matches_akamaster() -> None:
    model = resnet20()
    keys = set(model.state_dict())
    for key in ["conv1.weight", "bn1.running_var", "layer1.0.conv1.weight",
                "layer3.2.bn2.bias", "linear.weight", "linear.bias"]:
        assert key in keys
    assert not any("shortcut" in k for k in keys)  # option A has no state
    assert model.conv1.bias is None
    assert model.layer2[0].conv1.stride == (2, 2)
    assert model.layer2[1].conv1.stride == (1, 1)
    shortcuts = [m for m in model.modules() if isinstance(m, PadShortcut)]
    assert len(shortcuts) == 2  # first block of stages 2 and 3


def test_pad_shortcut_subsamples_and_zero_pads_symmetrically() -> None:
    sc = PadShortcut(16, 32, stride=2)
    assert list(sc.parameters()) == [] and sc.state_dict() == {}  # channel map: not saved
    x = torch.randn(2, 16, 8, 8)
    out = sc(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])  # planes // 4 = 8 each side
    assert not out[:, :8].any() and not out[:, 24:].any()
    with pytest.raises(InvalidArgumentError, match="out_planes"):
        PadShortcut(32, 16)


def test_bad_depth_and_names_raise_clear_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="6n\\+2"):
        CifarResNet(depth=21)
    with pytest.raises(InvalidArgumentError, match="resnet20"):
        get_model("resnet21")
    with pytest.raises(InvalidArgumentError, match="widht"):
        get_model("mobilenetv2", widht=0.5)
    with pytest.raises(InvalidArgumentError, match="num_classes"):
        get_model("resnet20", num_classes=0)


def test_torchvision_prefix_without_torchvision_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # simulate "not installed"
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(PruneGymError, match="pip install torchvision"):
        get_model("torchvision/resnet18")


def test_load_checkpoint_strips_prefix_and_does_not_modify_the_input() -> None:
    src = resnet20().eval()
    state = {"module." + k: v.clone() for k, v in src.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    ckpt = {"state_dict": state, "best_prec1": 91.0}
    before = copy.deepcopy(ckpt)
    dst = load_checkpoint(resnet20(), ckpt).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(dst(x), src(x))
    assert ckpt.keys() == before.keys() and state.keys() == before["state_dict"].keys()


def test_load_checkpoint_from_bare_state_dict_file(tmp_path) -> None:
    src = get_model("digits_cnn")
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    dst = load_checkpoint(get_model("digits_cnn"), path)
    for (ka, a), (kb, b) in zip(src.state_dict().items(), dst.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(a, b)


def test_mismatched_checkpoint_raises_and_leaves_model_untouched(tmp_path) -> None:
    model = resnet20()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad = resnet20(num_classes=100).state_dict()
    with pytest.raises(CheckpointError, match="shape mismatches: linear.weight"):
        load_checkpoint(model, bad)
    extra = dict(resnet20().state_dict(), **{"foo.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected keys: foo.weight"):
        load_checkpoint(model, extra)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_checkpoint(resnet56(), resnet20().state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_unreadable_or_missing_checkpoint_files(tmp_path) -> None:
    missing = tmp_path / "nope.th"
    with pytest.raises(CheckpointError, match="nope.th"):
        load_checkpoint(resnet20(), missing)
    garbage = tmp_path / "garbage.th"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.th"):
        load_checkpoint(resnet20(), garbage)
    whole_model = tmp_path / "model.th"
    torch.save(get_model("digits_cnn"), whole_model)  # a pickled module: refused safely
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(get_model("digits_cnn"), whole_model)
    with pytest.raises(CheckpointError, match="tensors"):
        load_checkpoint(resnet20(), {"conv1.weight": [1, 2, 3]})


def test_verify_sha256_and_file_url_download(tmp_path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"prune-gym" * 1000)
    digest = file_sha256(src)
    assert verify_sha256(src, digest) == digest
    assert verify_sha256(src, digest[:8].upper()) == digest
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        verify_sha256(src, "0" * 64)
    with pytest.raises(InvalidArgumentError, match="sha256"):
        verify_sha256(src, "xyz")

    dest = tmp_path / "sub" / "ckpt.th"
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        download_checkpoint(src.as_uri(), dest, "f" * 64)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # nothing half-done
    assert download_checkpoint(src.as_uri(), dest, digest) == dest
    assert dest.read_bytes() == src.read_bytes()
    assert download_checkpoint("file:///does/not/exist", dest, digest) == dest  # cached
    with pytest.raises(CheckpointError, match="could not download"):
        download_checkpoint((tmp_path / "absent").as_uri(), tmp_path / "x.th", digest)


@needs_shared("resnet20-cifar10-akamaster.th", "resnet56-cifar10-akamaster.th")
@pytest.mark.shared_data
@pytest.mark.parametrize(("builder", "path", "key"), [
    (resnet20, RESNET20_CKPT, "resnet20-cifar10-akamaster"),
    (resnet56, RESNET56_CKPT, "resnet56-cifar10-akamaster"),
])
def test_reference_checkpoints_load_exactly(builder, path, key) -> None:
    raw = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    model = load_checkpoint(builder(), path)
    loaded = model.state_dict()
    assert {k.removeprefix("module.") for k in raw} == {
        k for k in loaded if not k.endswith("num_batches_tracked")}
    for k, v in raw.items():
        assert torch.equal(loaded[k.removeprefix("module.")], v)
    assert verify_sha256(path, KNOWN_CHECKPOINTS[key]["sha256"])
