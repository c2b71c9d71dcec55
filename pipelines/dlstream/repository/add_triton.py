"""``dlstream models add --triton DIR``: a Triton model folder of its owner (any backend, an ensemble) that
takes the payload bytes and returns probabilities or logits.

Its config is kept as written, except its name and a ``dlstream.card`` parameter added; the card names the
input that takes the payload and the output that holds the scores. Triton alone can run such a model, so
the reference samples are run through Triton once it is loaded, and the reference statistics come from that.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tritonclient.http as triton_http

from dlstream.adapters.triton.client import softmax
from dlstream.domain.card import CARD_FILE, CARD_PARAMETER, MODEL_NAME_PATTERN, ModelCard, Outputs, a_task
from dlstream.models.reference import reference_statistics
from dlstream.models.triton_config import card_parameter
from dlstream.repository.add import AddError, AddRequest, read_labels, read_reference

BYTES_TYPES = ("TYPE_STRING", "TYPE_BYTES")


@dataclass(frozen=True)
class Tensor:
    """One input or output a config declares."""

    name: str
    data_type: str
    dims: list[int]


def _block(text: str, key: str) -> str:
    """The bracketed list after ``key`` (``input [...]``), brackets matched."""
    found = re.search(rf"^\s*{key}\s*\[", text, flags=re.MULTILINE)
    if found is None:
        raise AddError(f"the config declares no {key}")
    depth, start = 0, found.end() - 1
    for i in range(start, len(text)):
        depth += {"[": 1, "]": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i]
    raise AddError(f"the config's {key} list is not closed")


def tensors(text: str, key: str) -> list[Tensor]:
    """The tensors of a config's ``input`` or ``output`` list."""
    found = []
    for entry in re.finditer(r"\{(.*?dims\s*:\s*\[[^\]]*\][^}]*)\}", _block(text, key), flags=re.DOTALL):
        body = entry.group(1)
        name = re.search(r'name\s*:\s*"([^"]+)"', body)
        data_type = re.search(r"data_type\s*:\s*(TYPE_\w+)", body)
        dims = re.search(r"dims\s*:\s*\[([^\]]*)\]", body)
        if name and data_type and dims:
            values = [int(d) for d in re.findall(r"-?\d+", dims.group(1))]
            found.append(Tensor(name.group(1), data_type.group(1), values))
    return found


def rewrite_config(text: str, card: ModelCard) -> str:
    """The owner's config with the model's name and the card parameter (replacing an earlier one)."""
    text = re.sub(r'^(\s*)name\s*:\s*"[^"]*"', rf'\1name: "{card.name}"', text, count=1, flags=re.MULTILINE)
    text = re.sub(rf'^parameters \{{ key: "{re.escape(CARD_PARAMETER)}".*$\n?', "", text, flags=re.MULTILINE)
    return text.rstrip() + "\n" + card_parameter(card) + "\n"


def max_batch_size(text: str) -> int:
    """The config's ``max_batch_size``; payloads go to Triton as ``[n, 1]`` tensors, so it must batch."""
    found = re.search(r"^\s*max_batch_size\s*:\s*(\d+)", text, flags=re.MULTILINE)
    size = int(found.group(1)) if found else 0
    if size < 1:
        raise AddError(
            "the config must set max_batch_size to 1 or more: payloads are sent as a [batch, 1] tensor"
        )
    return size


def check_folder(request: AddRequest, labels: list[str]) -> tuple[Path, Tensor, Tensor, int]:
    """The owner's folder: its config, the input taking the payload, the scores output, its version."""
    folder = request.model_file
    config = folder / "config.pbtxt"
    if not config.is_file():
        raise AddError(f"{folder} is not a Triton model folder: it has no config.pbtxt")
    text = config.read_text()
    inputs, outputs = tensors(text, "input"), tensors(text, "output")
    if len(inputs) != 1 or inputs[0].data_type not in BYTES_TYPES:
        found = ", ".join(f"{t.name} {t.data_type}" for t in inputs) or "none"
        raise AddError(f"the model must take the payload bytes in one TYPE_STRING input; it declares {found}")
    if not outputs:
        raise AddError("the config declares no output")
    scores = outputs[0]
    if scores.dims and scores.dims[-1] > 0 and scores.dims[-1] != len(labels):
        raise AddError(
            f"output {scores.name!r} has {scores.dims[-1]} values; the labels file names {len(labels)}"
        )
    versions = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise AddError(f"{folder} has no numeric version folder")
    return config, inputs[0], scores, versions[-1]


def write_triton_model(repo: Path, request: AddRequest) -> tuple[Path, ModelCard]:
    """Check the folder and copy it into ``repo`` under the model's name with its card (one rename)."""
    if not re.match(MODEL_NAME_PATTERN, request.name):
        raise AddError(f"model name {request.name!r} must match {MODEL_NAME_PATTERN}")
    if (repo / request.name).exists():
        raise AddError(f"a model named {request.name!r} exists in {repo}; pick another name or remove it")
    if request.task != "classification":
        raise AddError(
            "a Triton model folder is added as a classifier; serve "
            f"{a_task(request.task)} model from its --onnx or --torchscript file"
        )
    if request.labels_file is None:
        raise AddError("a classifier needs --labels (its classes, one a line, in output order)")
    labels = read_labels(request.labels_file)
    config, payload, scores, version = check_folder(request, labels)
    reference = read_reference(request.reference_dir, request.modality, labels)
    card = ModelCard(
        name=request.name,
        version=version,
        modality=request.modality,
        labels=labels,
        outputs=Outputs(scores=scores.name, scores_are=request.scores_are, embedding=None, embedding_dims=0),
        preprocessing=None,
        source_format="triton",
        payload_input=payload.name,
        default=request.default,
        max_batch_size=max_batch_size(config.read_text()),
        metrics={"samples": len(reference.payloads), "classes": len(labels), "evaluation": "reference"},
    )
    staging = repo / f".{request.name}.adding"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(request.model_file, staging)
    try:
        (staging / "config.pbtxt").write_text(rewrite_config(config.read_text(), card))
        (staging / str(version) / CARD_FILE).write_text(card.to_json())
        shutil.copytree(request.reference_dir, staging / "reference")
        staging.rename(repo / request.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return repo / request.name, card


def score_through_triton(url: str, card: ModelCard, payloads: list[bytes]) -> npt.NDArray[np.float32]:
    """Probabilities of the reference payloads, as Triton serves the model."""
    client = triton_http.InferenceServerClient(url=url, network_timeout=300.0)
    rows = []
    try:
        for payload in payloads:
            tensor = triton_http.InferInput(card.payload_input, [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[payload]], dtype=object))
            result = client.infer(card.name, [tensor])
            scores = np.asarray(result.as_numpy(card.outputs.scores), dtype=np.float32).reshape(1, -1)
            rows.append(softmax(scores) if card.outputs.scores_are == "logits" else scores)
    finally:
        client.close()
    return np.concatenate(rows)


def write_reference(model_dir: Path, card: ModelCard, probabilities: npt.NDArray[np.float32]) -> None:
    """The version's reference statistics from the served model's outputs (no embedding)."""
    empty = np.zeros((len(probabilities), 0), dtype=np.float32)
    statistics = reference_statistics(probabilities, empty, card.labels, seed=0)
    (model_dir / str(card.version) / "reference.json").write_text(json.dumps(statistics))
