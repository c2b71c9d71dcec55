"""Model files a user brings (ONNX, TorchScript), loaded for in-process runs: inside Triton's Python backend,
when a model is added, and when a candidate version is evaluated.

A loaded model takes one batch (a tensor, or a tuple of tensors for models of several inputs) and returns its
outputs as float32 arrays, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import structlog
import torch

from dlstream.domain.errors import DlstreamError

Format = Literal["onnx", "torchscript"]
log = structlog.get_logger("dlstream.models")


class ModelFileError(DlstreamError):
    """The model file cannot be loaded or run; the message says why."""


@dataclass(frozen=True)
class InputInfo:
    """One model input as the file declares it (ONNX); ``shape`` has None for a dynamic dimension."""

    name: str
    shape: list[int | None] | None
    dtype: str


class LoadedModel:
    """A model file ready to run batches."""

    format: Format
    inputs: list[InputInfo]

    def run(self, batch: Any) -> list[npt.NDArray[np.float32]]:
        """The model's outputs for one batch."""
        raise NotImplementedError


def _arrays(batch: Any) -> tuple[npt.NDArray[Any], ...]:
    parts = batch if isinstance(batch, tuple) else (batch,)
    return tuple(p.numpy() if isinstance(p, torch.Tensor) else np.asarray(p) for p in parts)


class OnnxModel(LoadedModel):
    """An ONNX model run by onnxruntime (CUDA when asked for and available, else CPU)."""

    format: Format = "onnx"

    def __init__(self, path: Path, device: str = "cpu", input_names: Sequence[str] = ()) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types for a bad file
            raise ModelFileError(f"{path.name} is not a model onnxruntime can load: {exc}") from None
        declared = self.session.get_inputs()
        self.inputs = [
            InputInfo(i.name, [d if isinstance(d, int) else None for d in i.shape], i.type) for i in declared
        ]
        self.feed_names = list(input_names) or [i.name for i in declared]

    def run(self, batch: Any) -> list[npt.NDArray[np.float32]]:
        arrays = _arrays(batch)
        feeds = {name: array for name, array in zip(self.feed_names, arrays, strict=True)}
        outputs = self.session.run(None, feeds)
        return [np.asarray(o, dtype=np.float32) for o in outputs]


class ServingModule:
    """A TorchScript module as served: frozen and passed through ``torch.jit.optimize_for_inference`` (batch
    norm folded into the convolutions, oneDNN kernels on the CPU), since the traced module's forward pass is
    most of Triton's time per event (see the README's latency figures). A module the passes refuse, or whose
    optimised form fails where the module as loaded runs, is served as loaded."""

    def __init__(self, module: torch.jit.ScriptModule, name: str, *, optimise: bool = True) -> None:
        self.module = module
        self.name = name
        self.optimised: torch.jit.ScriptModule | None = None
        if not optimise:
            return
        try:
            self.optimised = torch.jit.optimize_for_inference(module)
        except Exception as exc:  # noqa: BLE001 - any refusal of the passes: serve the module as loaded
            log.warning("model.not_optimised", model=name, error=f"{type(exc).__name__}: {exc}")

    def __call__(self, *inputs: Any) -> Any:
        if self.optimised is None:
            return self.module(*inputs)
        try:
            return self.optimised(*inputs)
        except RuntimeError as exc:
            result = self.module(*inputs)  # raises too when the inputs are at fault: keep the optimised form
            log.warning("model.optimised_failed", model=self.name, error=str(exc))
            self.optimised = None
            return result


class TorchScriptModel(LoadedModel):
    """A TorchScript module (``torch.jit.save``), run under inference mode."""

    format: Format = "torchscript"

    def __init__(self, path: Path, device: str = "cpu", *, optimise: bool = True) -> None:
        self.device = torch.device(device)
        try:
            module = torch.jit.load(str(path), map_location=self.device).eval()  # type: ignore[no-untyped-call]
        except (RuntimeError, ValueError) as exc:
            raise ModelFileError(f"{path.name} is not a TorchScript module: {exc}") from None
        self.module = ServingModule(module, path.name, optimise=optimise)
        self.inputs = []

    @torch.inference_mode()
    def run(self, batch: Any) -> list[npt.NDArray[np.float32]]:
        parts = batch if isinstance(batch, tuple) else (batch,)
        tensors = [p.to(self.device) if isinstance(p, torch.Tensor) else torch.as_tensor(p) for p in parts]
        result = self.module(*tensors)
        outputs = list(result) if isinstance(result, list | tuple) else [result]
        return [o.detach().float().cpu().numpy() for o in outputs]


def load_model_file(
    path: Path, format: Format, device: str = "cpu", inputs: Sequence[str] = (), *, optimise: bool = True
) -> LoadedModel:
    """Load a model file.

    Raises:
        ModelFileError: the file is missing, corrupt or of another format.
    """
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    if format == "onnx":
        return OnnxModel(path, device, inputs)
    return TorchScriptModel(path, device, optimise=optimise)
