"""Saving a (pruned) model to a file others can run: ``state_dict``, ``torchscript``, ``onnx``.

Why the ``state_dict`` format pickles the whole module rather than its ``state_dict()``: a
pruned network's layers no longer have the shapes its class builds (``conv1`` keeps 11 of
16 channels, the next layer's input follows), so ``Model().load_state_dict(sd)`` fails,
and rebuilding the shapes from a keep state would need the original model, its weights
and a fresh analysis at load time. ``torch.save`` of the module holds the pruned shapes
and weights in one self-contained file; loading it needs only the model's classes to be
importable (prune-gym's own, or the user's). The price is pickle: :func:`load_model`
unpickles, so load only files you trust (``torchscript`` and ``onnx`` files carry no code).

``torchscript`` is ``torch.jit.trace`` (the model is traced, not scripted, so any CNN
whose forward does not branch on data works) and ``onnx`` is ``torch.onnx.export`` with
the ``torch.export``-based exporter, the default since torch 2.9, which needs the ``onnx``
and ``onnxscript`` packages. Both tracing formats are checked against the eager model on
two batch sizes before the file is kept, so a file that exists computes what the model
computes. Modules a tracer cannot record (the option-A shortcut is a custom autograd
function) are swapped, in a copy, for plain-op equivalents first (:data:`TRACEABLE`).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from prune_gym.arguments import check_choice
from prune_gym.errors import InvalidArgumentError, MissingDependencyError, ModelAnalysisError
from prune_gym.files import atomic_path
from prune_gym.models.cifar_resnet import PadShortcut

__all__ = ["FORMATS", "SUFFIXES", "TRACEABLE", "MissingExportDependencyError", "as_inputs",
           "file_size", "load_model", "read_metadata", "save_model", "traceable_copy"]

FORMATS = ("state_dict", "torchscript", "onnx")
SUFFIXES = {"state_dict": ".pt", "torchscript": ".ts", "onnx": ".onnx"}
# what each format needs beyond torch, as ``pip install`` names (import name -> pip name)
_NEEDS = {"onnx": {"onnx": "onnx", "onnxscript": "onnxscript"}}
_TAG = "prune_gym_export"  # marks our state_dict files (and their version)
_META = "prune_gym.json"  # the metadata entry of torchscript files
_ATOL, _RTOL = 1e-4, 1e-4


class MissingExportDependencyError(InvalidArgumentError, MissingDependencyError):
    """A format (or loading it back) needs a package that is not installed.

    Both an :class:`InvalidArgumentError` (the ``format`` asked for cannot be served here)
    and a :class:`MissingDependencyError` (an ``ImportError``), so either ``except`` works.
    """


def as_inputs(example_inputs, argument: str = "example_inputs") -> tuple[torch.Tensor, ...]:
    """``example_inputs`` as a tuple of tensors with a batch dimension, or an error."""
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else example_inputs
    if not (isinstance(inputs, (tuple, list)) and inputs
            and all(isinstance(t, torch.Tensor) and t.dim() >= 1 and len(t) >= 1
                    for t in inputs)):
        raise InvalidArgumentError(
            f"{argument} must be a tensor (or a tuple of tensors) shaped like one batch the "
            f"model takes, e.g. torch.randn(1, 3, 32, 32); got {type(example_inputs).__name__}")
    return tuple(inputs)


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"model must be a torch.nn.Module; got {type(model).__name__}")


def _require(fmt: str, what: str, needs: dict[str, str]) -> None:
    missing = [pip for mod, pip in needs.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise MissingExportDependencyError(
            f"format={fmt!r} {what} needs the package(s) {', '.join(missing)}, which are not "
            f"installed; run `pip install {' '.join(missing)}` (or choose format='state_dict' "
            f"or 'torchscript', which need only torch)")


# -- modules a tracer cannot record, and their plain-op equivalents ------------------------
class GatherPad(nn.Module):
    """A :class:`~prune_gym.models.cifar_resnet.PadShortcut` as two gathers, for tracers.

    ``PadShortcut`` runs a custom autograd function (so Torch-Pruning sees one node), which
    ``torch.jit`` cannot save. Its channel map is fixed once pruning is done, so here it is
    an index over the input plus one zero channel: output channel ``c`` reads input channel
    ``index[c]``, unmapped outputs read the zero channel. Same numbers, plain ops.
    """

    def __init__(self, pad: PadShortcut):
        super().__init__()
        self.stride = pad.stride
        index = torch.full((pad.out_planes,), pad.in_planes, dtype=torch.long,
                           device=pad.dst.device)
        index[pad.dst] = pad.src
        self.register_buffer("index", index)
        gated = not bool((pad.gate == 1).all())
        self.register_buffer("gate", pad.gate.detach().clone() if gated else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        out = torch.cat([x, torch.zeros_like(x[:, :1])], 1).index_select(1, self.index)
        if self.gate is not None:
            out = out * self.gate.to(x.dtype).view(1, -1, *[1] * (x.dim() - 2))
        return out


# module type -> factory of a traceable module computing the same function
TRACEABLE: dict[type, Callable[[nn.Module], nn.Module]] = {PadShortcut: GatherPad}


def traceable_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode, with every :data:`TRACEABLE` module swapped."""
    _check_model(model)
    twin = copy.deepcopy(model).eval()
    for name, module in list(twin.named_modules()):
        factory = TRACEABLE.get(type(module))
        if factory is None or not name:
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(twin.get_submodule(parent), leaf, factory(module).eval())
    if type(twin) in TRACEABLE:
        twin = TRACEABLE[type(twin)](twin).eval()
    return twin


# -- saving --------------------------------------------------------------------------------
def save_model(model: nn.Module, path: str | os.PathLike, format: str = "state_dict",  # noqa: A002
               example_inputs=None, *, metadata: dict | None = None) -> Path:
    """Write ``model`` to ``path`` in ``format``; the model itself is never modified.

    Args:
        model: the (pruned) model, e.g. ``PrunableNetwork.export(keep)``.
        path: the file to write (its folder is created). Overwritten if it exists.
        format: ``"state_dict"`` (the whole module pickled: the pruned shapes and weights,
            see the module docstring), ``"torchscript"`` (``torch.jit.trace``) or
            ``"onnx"`` (needs ``pip install onnx onnxscript``).
        example_inputs: one batch the model takes (a tensor or a tuple), required by the
            tracing formats; with ``state_dict`` it is optional and, if given, the model is
            run on it once before saving. Tracing formats keep the batch size dynamic.
        metadata: JSON-serialisable facts to keep beside the model (task, keep state,
            MACs...); :func:`read_metadata` gives them back.

    Returns:
        The path written.

    Raises:
        InvalidArgumentError: bad ``format``, ``model``, ``example_inputs`` or ``metadata``.
        MissingExportDependencyError: ``format="onnx"`` without ``onnx``/``onnxscript``.
        ModelAnalysisError: the traced file would not compute what the model computes.
    """
    _check_model(model)
    fmt = check_choice(format, FORMATS, "format")
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentError(f"path must be a file path (str or os.PathLike); got "
                                   f"{type(path).__name__}")
    path = Path(path)
    if example_inputs is None and fmt != "state_dict":
        raise InvalidArgumentError(
            f"format={fmt!r} traces the model and needs example_inputs=, one batch it takes "
            "(e.g. torch.randn(1, 3, 32, 32)); format='state_dict' does not")
    inputs = None if example_inputs is None else as_inputs(example_inputs)
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidArgumentError(f"metadata must be a dict; got {type(metadata).__name__}")
    try:
        meta_text = json.dumps(metadata if metadata is not None else {})
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"metadata must be JSON-serialisable (numbers, strings, "
                                   f"lists, dicts); {exc}") from exc
    if fmt == "onnx":
        _require(fmt, "export", _NEEDS["onnx"])
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "state_dict":
        _save_module(model, path, inputs, meta_text)
    elif fmt == "torchscript":
        _save_torchscript(model, path, inputs, meta_text)
    else:
        _save_onnx(model, path, inputs, meta_text)
    return path


def _written(path: Path, write: Callable[[Path], None], check: Callable[[Path], None] | None = None
             ) -> None:
    """``write`` into a temporary file beside ``path``, ``check`` it, then move it into place:
    a failure leaves neither a half-written file nor a changed old one."""
    with atomic_path(path) as tmp:
        write(tmp)
        if check is not None:
            check(tmp)


def _eager(model: nn.Module, inputs: tuple) -> torch.Tensor:
    with torch.inference_mode():
        return model(*inputs)


def _check_batch(inputs: tuple, size: int) -> tuple:
    """The first example repeated ``size`` times (different from the traced batch size)."""
    return tuple(t[:1].expand(size, *t.shape[1:]).contiguous() for t in inputs)


def _matches(name: str, reference: nn.Module, run: Callable, inputs: tuple) -> None:
    """Raise unless ``run`` gives what ``reference`` gives, at two batch sizes."""
    for size in (len(inputs[0]), len(inputs[0]) + 2):
        batch = _check_batch(inputs, size) if size != len(inputs[0]) else inputs
        want, got = _eager(reference, batch), run(batch)
        if got.shape != want.shape or not torch.allclose(got, want, atol=_ATOL, rtol=_RTOL):
            diff = (got - want).abs().max().item() if got.shape == want.shape else "shape"
            raise ModelAnalysisError(
                f"the {name} model does not match the eager model at batch size {size} "
                f"(max difference {diff}): its forward probably depends on the data or the "
                "batch size, which tracing cannot record; save it with format='state_dict'")


def _save_module(model: nn.Module, path: Path, inputs, meta_text: str) -> None:
    twin = copy.deepcopy(model)
    if inputs is not None:
        was = twin.training
        try:
            _eager(twin.eval(), inputs)
        except Exception as exc:  # noqa: BLE001 - any failure means the same to the user
            raise InvalidArgumentError(f"the model fails on example_inputs ({exc}); pass "
                                       "one batch it takes") from exc
        twin.train(was)
    blob = {_TAG: 1, "model": twin, "metadata": json.loads(meta_text),
            "torch": torch.__version__}

    def write(tmp: Path) -> None:
        try:
            torch.save(blob, tmp)
        except Exception as exc:  # noqa: BLE001 - pickling fails in many ways
            raise InvalidArgumentError(
                f"model cannot be pickled ({exc}); format='state_dict' saves the whole module, "
                "so its classes must be importable: save it with format='torchscript'") from exc

    _written(path, write)


def _traceable(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(the eager reference in eval mode, the copy a tracer gets); the caller's model is
    left as it is."""
    return copy.deepcopy(model).eval(), traceable_copy(model)


def _save_torchscript(model: nn.Module, path: Path, inputs: tuple, meta_text: str) -> None:
    reference, twin = _traceable(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            with torch.no_grad():
                traced = torch.jit.trace(twin, inputs if len(inputs) > 1 else inputs[0],
                                         check_trace=False)
        except Exception as exc:  # noqa: BLE001
            raise ModelAnalysisError(f"torch.jit.trace cannot trace this model ({exc}); save "
                                     "it with format='state_dict'") from exc
        _matches("TorchScript", reference, lambda batch: _eager(traced, batch), inputs)
        _written(path, lambda tmp: torch.jit.save(traced, str(tmp),
                                                  _extra_files={_META: meta_text}))


def _save_onnx(model: nn.Module, path: Path, inputs: tuple, meta_text: str) -> None:
    import onnx  # noqa: PLC0415 - optional dependency, checked by the caller

    reference, twin = _traceable(model)
    batch = torch.export.Dim("batch")
    names = [f"input{i}" if len(inputs) > 1 else "input" for i in range(len(inputs))]
    # torch.export takes a size-1 dimension for a constant: trace at batch 2 so it stays free
    traced_inputs = _check_batch(inputs, 2)
    quiet = logging.getLogger("torch.onnx")  # its op registry warns of absent torchvision ops
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # weights inside the file (external_data=False): one file, up to ONNX's 2 GB
            program = torch.onnx.export(
                twin, traced_inputs, dynamo=True, input_names=names, output_names=["output"],
                dynamic_shapes=tuple({0: batch} for _ in inputs), external_data=False,
                verbose=False)
        except Exception as exc:  # noqa: BLE001
            raise ModelAnalysisError(f"torch.onnx.export cannot export this model ({exc}); "
                                     "save it with format='state_dict' or 'torchscript'") \
                from exc
        finally:
            quiet.setLevel(level)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = _META, meta_text

    def check(tmp: Path) -> None:  # run what was written, when onnxruntime is there
        if importlib.util.find_spec("onnxruntime") is not None:
            runner = _OnnxModule(tmp)
            _matches("ONNX", reference, lambda batch: runner(*batch), inputs)

    _written(path, lambda tmp: onnx.save_model(proto, str(tmp)), check)


# -- loading -------------------------------------------------------------------------------
def _kind(path: Path) -> str:
    """Which format a file is in, from its content (suffixes are the user's to choose)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any("/code/" in n for n in names):  # TorchScript keeps its source; torch.save not
            return "torchscript"
        return "state_dict"
    return "onnx"


class _OnnxModule(nn.Module):
    """An ONNX file run by onnxruntime behind ``nn.Module``'s call, for checks and latency."""

    def __init__(self, path: Path):
        super().__init__()
        import onnxruntime  # noqa: PLC0415 - optional dependency, checked by the caller

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), options,
                                                    providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {n: t.detach().cpu().numpy() for n, t in zip(self.names, inputs)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def _check_file(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentError(f"path must be a file path (str or os.PathLike); got "
                                   f"{type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise InvalidArgumentError(f"path={str(path)!r} is not a file; pass a file written by "
                                   "prune_gym.export.save_model")
    return path


def load_model(path: str | os.PathLike) -> nn.Module:
    """The runnable model saved by :func:`save_model`, in eval mode; the format is read
    from the file's content.

    ``state_dict`` files are unpickled (load only files you trust); ``torchscript`` ones
    come back as a ``torch.jit.ScriptModule``; ``onnx`` ones as an ``nn.Module`` that runs
    the file with onnxruntime (``pip install onnxruntime``) on CPU.

    Raises:
        InvalidArgumentError: ``path`` is not a file, or not one :func:`save_model` wrote.
        MissingExportDependencyError: an ONNX file without ``onnxruntime`` installed.
    """
    path = _check_file(path)
    kind = _kind(path)
    if kind == "onnx":
        _require("onnx", "loading", {"onnxruntime": "onnxruntime"})
        try:
            return _OnnxModule(path).eval()
        except Exception as exc:  # noqa: BLE001 - not an ONNX file either
            raise InvalidArgumentError(f"path={str(path)!r} is neither a prune-gym model file "
                                       f"nor an ONNX model ({exc})") from exc
    if kind == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or _TAG not in blob:
        raise InvalidArgumentError(f"path={str(path)!r} is a torch file but not one written by "
                                   "save_model (format='state_dict'); load it with torch.load")
    return blob["model"].eval()


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``metadata`` dict saved with the model (``{}`` if none was given)."""
    path = _check_file(path)
    kind = _kind(path)
    if kind == "torchscript":
        extra = {_META: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        return json.loads(extra[_META] or "{}")
    if kind == "onnx":
        _require("onnx", "reading", {"onnx": "onnx"})
        import onnx  # noqa: PLC0415

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
                 .metadata_props}
        return json.loads(props.get(_META, "{}"))
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or _TAG not in blob:
        raise InvalidArgumentError(f"path={str(path)!r} was not written by save_model")
    return blob["metadata"]


def file_size(path: str | os.PathLike) -> int:
    """Bytes on disk of a saved model (with an ONNX file's external data, if any)."""
    path = _check_file(path)
    extra = path.with_name(path.name + ".data")
    return path.stat().st_size + (extra.stat().st_size if extra.is_file() else 0)
