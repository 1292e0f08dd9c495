"""Saved models come back runnable and computing what was saved; bad calls say what to do."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
from torch import nn

from agents.baselines import uniform
from prune_gym import PrunableNetwork
from prune_gym import export as export_module
from prune_gym.errors import InvalidArgumentError, MissingDependencyError, ModelAnalysisError
from prune_gym.export import (
    FORMATS,
    GatherPad,
    MissingExportDependencyError,
    file_size,
    load_model,
    read_metadata,
    save_model,
    traceable_copy,
)
from prune_gym.models import resnet20
from prune_gym.models.cifar_resnet import PadShortcut
from prune_gym.network import PruningWarning
from prune_gym.tasks import make_task

HAS_ONNX = all(importlib.util.find_spec(m) is not None
               for m in ("onnx", "onnxscript", "onnxruntime"))
LOCAL = [f for f in FORMATS if f != "onnx"] + (["onnx"] if HAS_ONNX else [])


def _pruned(model, example, budget=0.5):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruningWarning)
        net = PrunableNetwork(model, example)
    keep = uniform(net, budget)
    return net.export(keep).eval(), keep


@pytest.fixture(scope="module")
def digits():
    """(pruned model, keep, example, validation images) for both embedded digits tasks."""
    out = {}
    for name in ("digits-cnn-v1", "digits-resnet-v1"):
        task = make_task(name)
        pruned, keep = _pruned(task.model, task.example_inputs)
        out[name] = (pruned, keep, task.example_inputs, task.val_data[0][:32])
    return out


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("fmt", LOCAL)
@pytest.mark.parametrize("name", ["digits-cnn-v1", "digits-resnet-v1"])
def test_round_trip_gives_the_same_outputs(digits, tmp_path, name, fmt):
    pruned, keep, example, images = digits[name]
    pruned.train()  # saving must neither switch the caller's model to eval nor touch it
    before = _state(pruned)
    path = save_model(pruned, tmp_path / f"model{export_module.SUFFIXES[fmt]}", fmt, example,
                      metadata={"task": name, "keep": keep})
    assert pruned.training and all(m.training for m in pruned.modules())
    assert all(torch.equal(v, before[k]) for k, v in pruned.state_dict().items())
    loaded = load_model(path)
    pruned.eval()
    with torch.no_grad():
        want, got = pruned(images), loaded(images)
    if fmt == "state_dict":
        assert torch.equal(got, want)
        assert not loaded.training
    else:
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert read_metadata(path) == {"task": name, "keep": keep}
    assert file_size(path) == path.stat().st_size > 0


def test_state_dict_file_holds_the_pruned_shapes(digits, tmp_path):
    """The reason for pickling the module: its class would build the unpruned shapes."""
    pruned, _, example, _ = digits["digits-cnn-v1"]
    fresh = type(pruned)()
    with pytest.raises(RuntimeError, match="size mismatch"):
        fresh.load_state_dict(pruned.state_dict())
    loaded = load_model(save_model(pruned, tmp_path / "m.pt"))  # example_inputs optional
    assert {k: v.shape for k, v in loaded.state_dict().items()} == \
        {k: v.shape for k, v in pruned.state_dict().items()}
    assert read_metadata(tmp_path / "m.pt") == {}


def test_torchscript_of_a_pruned_option_a_resnet(tmp_path):
    """ResNet-20's shortcut is a custom autograd op torch.jit cannot save: it is swapped for
    plain gathers, and the file computes what the eager pruned network computes."""
    torch.manual_seed(0)
    model = resnet20().eval()
    example = torch.randn(1, 3, 32, 32)
    pruned, _ = _pruned(model, example)
    assert any(isinstance(m, PadShortcut) for m in pruned.modules())
    loaded = load_model(save_model(pruned, tmp_path / "r20.ts", "torchscript", example))
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x), atol=1e-5, rtol=1e-5)
    assert any(isinstance(m, PadShortcut) for m in pruned.modules())  # caller's copy kept


def test_gather_pad_matches_the_shortcut_with_a_map_and_a_gate():
    torch.manual_seed(0)
    pad = PadShortcut(4, 8)
    pad.src, pad.dst = torch.tensor([0, 2, 3]), torch.tensor([5, 1, 6])  # a pruned map
    pad.in_planes = 4
    pad.gate = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0])
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(GatherPad(pad)(x), pad(x))
    twin = traceable_copy(nn.Sequential(nn.Identity(), pad))
    assert isinstance(twin[1], GatherPad) and isinstance(pad, PadShortcut)
    torch.testing.assert_close(twin(x), pad(x))


class _BatchBaked(nn.Module):
    """Multiplies by the batch size read as a Python int: a trace bakes it in."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) * int(x.shape[0])


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_torchscript_refuses_a_trace_that_differs_from_the_model(tmp_path):
    path = tmp_path / "baked.ts"
    path.write_bytes(b"an older file")
    with pytest.raises(ModelAnalysisError, match="batch size 3.*format='state_dict'"):
        save_model(_BatchBaked(), path, "torchscript", torch.randn(1, 4))
    assert path.read_bytes() == b"an older file"  # a failed save changes nothing
    assert [p.name for p in tmp_path.iterdir()] == ["baked.ts"]


def test_a_module_that_cannot_be_pickled_says_what_to_use(tmp_path):
    model = nn.Linear(4, 2)
    model.hook = lambda x: x  # deep-copies, but pickle refuses a lambda
    with pytest.raises(InvalidArgumentError, match="cannot be pickled.*format='torchscript'"):
        save_model(model, tmp_path / "m.pt", example_inputs=torch.randn(1, 4))
    assert not list(tmp_path.iterdir())
    loaded = load_model(save_model(model, tmp_path / "m.ts", "torchscript", torch.randn(1, 4)))
    x = torch.randn(3, 4)
    torch.testing.assert_close(loaded(x), model(x))


def test_bad_arguments_name_what_is_right(digits, tmp_path):
    pruned, _, example, _ = digits["digits-cnn-v1"]
    with pytest.raises(InvalidArgumentError, match="format='pickle'.*state_dict, torchscript, "
                                                   "onnx"):
        save_model(pruned, tmp_path / "m", "pickle", example)
    with pytest.raises(InvalidArgumentError, match="format='torchscript'.*example_inputs="):
        save_model(pruned, tmp_path / "m.ts", "torchscript")
    with pytest.raises(InvalidArgumentError, match="example_inputs must be a tensor"):
        save_model(pruned, tmp_path / "m.ts", "torchscript", [1, 2])
    with pytest.raises(InvalidArgumentError, match="model must be a torch.nn.Module"):
        save_model("model.pt", tmp_path / "m.pt")
    with pytest.raises(InvalidArgumentError, match="metadata must be JSON-serialisable"):
        save_model(pruned, tmp_path / "m.pt", metadata={"keep": object()})
    with pytest.raises(InvalidArgumentError, match="path=.*is not a file"):
        load_model(tmp_path / "absent.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(InvalidArgumentError, match="not one written by save_model"):
        load_model(tmp_path / "other.pt")
    assert not list(tmp_path.glob("m*"))


@pytest.mark.parametrize("absent, named", [(("onnx", "onnxscript"), "onnx onnxscript"),
                                           (("onnxscript",), "onnxscript")])
def test_onnx_without_its_packages_names_every_missing_one(digits, tmp_path, monkeypatch,
                                                           absent, named):
    real = importlib.util.find_spec
    onnx_names = ("onnx", "onnxscript", "onnxruntime")  # installed or not: pretend both ways

    def find_spec(mod, *args):
        if mod in onnx_names:
            return None if mod in absent else real("json")
        return real(mod, *args)

    monkeypatch.setattr(export_module.importlib.util, "find_spec", find_spec)
    pruned, _, example, _ = digits["digits-cnn-v1"]
    path = tmp_path / "m.onnx"
    with pytest.raises(MissingExportDependencyError, match=f"format='onnx'.*pip install {named}`"
                       ) as info:
        save_model(pruned, path, "onnx", example)
    assert isinstance(info.value, InvalidArgumentError)
    assert isinstance(info.value, MissingDependencyError) and isinstance(info.value, ImportError)
    assert not path.exists()


def test_loading_onnx_without_onnxruntime_says_so(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(export_module.importlib.util, "find_spec",
                        lambda mod, *a: None if mod == "onnxruntime" else real(mod, *a))
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x08\x07")  # not a zip: read as ONNX
    with pytest.raises(MissingExportDependencyError, match="pip install onnxruntime"):
        load_model(path)


@pytest.mark.skipif(not HAS_ONNX, reason="onnx, onnxscript and onnxruntime are not installed")
def test_onnx_keeps_the_batch_size_free(digits, tmp_path):
    pruned, _, example, images = digits["digits-resnet-v1"]
    loaded = load_model(save_model(pruned, tmp_path / "m.onnx", "onnx", example))
    for n in (1, 7):
        with torch.no_grad():
            torch.testing.assert_close(loaded(images[:n]), pruned(images[:n]), atol=1e-4,
                                       rtol=1e-4)
