"""``dlstream models add``: its owner's model file (ONNX or TorchScript) checked, then written as version 1.

Everything is checked before anything is written: the name, the labels, the declared preprocessing, the model
file (it loads; its input takes what the preprocessing makes; its scores have one value per label), and the
reference samples (they decode and run). Then the model folder (version 1 with its card, the model file, the
reference statistics and the embedding projection fitted on the reference data, and the generated configs) is
assembled under a hidden name and renamed into place, so the repository either has the whole model or is as
it was.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from dlstream.adapters.triton.answers import task_prediction
from dlstream.adapters.triton.client import Inference
from dlstream.domain.card import (
    CARD_FILE,
    LABELS_MEAN,
    MODEL_NAME_PATTERN,
    AudioPreprocessing,
    ClassificationTask,
    DetectionTask,
    EmbeddingTask,
    ImagePreprocessing,
    ModelCard,
    Outputs,
    Preprocessing,
    Retraining,
    SequenceTask,
    SourceModel,
    TaskName,
    TokensPreprocessing,
    a_task,
)
from dlstream.domain.contract import Modality, Timing, new_request
from dlstream.domain.drift_signals import Signals, categories, signals
from dlstream.domain.errors import ContractError, DlstreamError
from dlstream.models.evaluate import classification_report
from dlstream.models.export import EMBEDDING_DIMS, TRITON_MODEL_FILE
from dlstream.models.postprocess import OutputShapeError, read_vocabulary
from dlstream.models.preprocess.declared import Preprocessor, preprocessor
from dlstream.models.preprocess.errors import PayloadError
from dlstream.models.reference import pca_projection, reference_statistics
from dlstream.models.serving import runner_outputs, source_outputs
from dlstream.models.source_models import LoadedModel, ModelFileError, load_model_file
from dlstream.models.triton_config import write_configs
from dlstream.repository.task_options import TaskOptionError, number_or_text, parse_task

SourceFormat = Literal["onnx", "torchscript"]
REFERENCE_SUFFIXES: dict[Modality, tuple[str, ...]] = {
    Modality.IMAGE: (".png", ".jpg", ".jpeg"),
    Modality.AUDIO: (".wav",),
    Modality.TEXT: (".txt",),
}
PREPROCESSING: dict[Modality, type[ImagePreprocessing | AudioPreprocessing | TokensPreprocessing]] = {
    Modality.IMAGE: ImagePreprocessing,
    Modality.AUDIO: AudioPreprocessing,
    Modality.TEXT: TokensPreprocessing,
}
MIN_REFERENCE = 20
BATCH = 32
PROJECTION_FILE = "projection.npz"


class AddError(DlstreamError):
    """The model cannot be added as given; nothing was written. The message says what is wrong."""


@dataclass(frozen=True)
class AddRequest:
    """What ``dlstream models add`` was asked."""

    name: str
    modality: Modality
    source_format: SourceFormat | Literal["triton"]
    model_file: Path  # the file, or the folder of a Triton model
    labels_file: Path | None
    reference_dir: Path
    preprocess: Mapping[str, str]
    default: bool = False
    scores_are: Literal["logits", "probabilities"] = "logits"
    embedding_output: int | None = None
    train_command: Sequence[str] | None = None
    task: TaskName = "classification"
    task_options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    """The reference samples: payloads, with label indices where the folder names their class."""

    payloads: list[bytes]
    labels: list[int] | None
    files: list[str]


@dataclass(frozen=True)
class Prepared:
    """A request that passed every check, with what the checks measured (``probabilities`` for a
    classifier; the drift reference of another task's predictions in ``task_reference``)."""

    card: ModelCard
    model: LoadedModel
    probabilities: npt.NDArray[np.float32] | None
    embedding: npt.NDArray[np.float32]
    projection: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None
    samples_per_s: float
    reference: Reference
    task_reference: dict[str, Any] | None = None


def read_labels(path: Path, task: TaskName = "classification") -> list[str]:
    """One label per line, in output order (classes, or the names of a regressor's values)."""
    if not path.is_file():
        raise AddError(f"labels file {path} does not exist")
    labels = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    labels = [label for label in labels if label]
    fewest = LABELS_MEAN[task][1]
    if len(labels) < fewest:
        raise AddError(
            f"labels file {path} names {len(labels)} labels; {a_task(task)} model needs at least {fewest}"
        )
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise AddError(f"labels file {path} repeats {', '.join(repeated[:5])}")
    return labels


def _value(text: str) -> Any:
    if "," in text:
        return [_value(part) for part in text.split(",") if part.strip()]
    return number_or_text(text)


def parse_preprocessing(modality: Modality, pairs: Mapping[str, str], tokenizer_dir: Path) -> Preprocessing:
    """The declared preprocessing of ``KEY=VALUE`` pairs for ``modality`` (lists are comma-separated).

    For text, ``tokenizer`` names a ``tokenizer.json`` file (or a folder holding one); it is copied into the
    version as ``tokenizer.json``.
    """
    schema = PREPROCESSING[modality]
    known = sorted(
        set(schema.model_fields) - {"kind"} | ({"size"} if schema is ImagePreprocessing else set())
    )
    unknown = sorted(set(pairs) - set(known))
    if unknown:
        raise AddError(
            f"unknown preprocess key {', '.join(unknown)} for {modality.value}; known: {', '.join(known)}"
        )
    values: dict[str, Any] = {key: _value(text) for key, text in pairs.items()}
    for key in ("mean", "std", "inputs"):
        if key in values and not isinstance(values[key], list):
            values[key] = [values[key]]
    if schema is TokensPreprocessing:
        source = Path(str(values.get("tokenizer", "")))
        if source.is_dir():
            source = source / "tokenizer.json"
        if not source.is_file():
            raise AddError("text models need --preprocess tokenizer=PATH (a tokenizer.json or its folder)")
        shutil.copy2(source, tokenizer_dir / "tokenizer.json")
        values["tokenizer"] = "tokenizer.json"
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise AddError(f"preprocessing for {modality.value}: {problems}") from None


def read_reference(folder: Path, modality: Modality, labels: list[str]) -> Reference:
    """The reference samples of a folder: files of the modality's kind directly in it, or in subfolders named
    after labels (then their class is known). Text files give one sample per non-empty line."""
    if not folder.is_dir():
        raise AddError(f"reference folder {folder} does not exist")
    suffixes = REFERENCE_SUFFIXES[modality]
    payloads: list[bytes] = []
    classes: list[int | None] = []
    files: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes):
        relative = path.relative_to(folder)
        label = (
            labels.index(relative.parts[0])
            if len(relative.parts) > 1 and relative.parts[0] in labels
            else None
        )
        if modality is Modality.TEXT:
            lines = [
                line
                for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                if line.strip()
            ]
            payloads += [line.encode() for line in lines]
            classes += [label] * len(lines)
            files += [f"{relative}:{i + 1}" for i in range(len(lines))]
        else:
            payloads.append(path.read_bytes())
            classes.append(label)
            files.append(str(relative))
    if len(payloads) < MIN_REFERENCE:
        raise AddError(
            f"reference folder {folder} holds {len(payloads)} {modality.value} samples "
            f"({', '.join(suffixes)}); at least {MIN_REFERENCE} are needed for drift statistics"
        )
    known = None if any(c is None for c in classes) else [int(c) for c in classes if c is not None]
    return Reference(payloads, known, files)


def _decode_all(preprocess: Preprocessor, reference: Reference) -> list[Any]:
    decoded, failures = [], []
    for payload, name in zip(reference.payloads, reference.files, strict=True):
        try:
            decoded.append(preprocess.decode(payload))
        except PayloadError as exc:
            failures.append(f"{name}: {exc}")
    if failures:
        shown = "; ".join(failures[:3])
        raise AddError(
            f"{len(failures)} of {len(reference.payloads)} reference samples do not decode: {shown}"
        )
    return decoded


def _check_inputs(model: LoadedModel, preprocessing: Preprocessing) -> None:
    """The model's declared inputs (ONNX) against what the preprocessing makes."""
    if not model.inputs:
        return  # TorchScript declares none; the reference run checks
    expected = preprocessing.input_shape
    wanted_type = "tensor(float)"
    if isinstance(preprocessing, TokensPreprocessing):
        wanted_type = "tensor(int64)"
    elif isinstance(preprocessing, ImagePreprocessing) and preprocessing.dtype == "uint8":
        wanted_type = "tensor(uint8)"
    feeds = len(preprocessing.inputs) if isinstance(preprocessing, TokensPreprocessing) else 1
    if len(model.inputs) != feeds:
        raise AddError(f"the model takes {len(model.inputs)} inputs; the preprocessing makes {feeds}")
    for declared in model.inputs:
        if declared.dtype != wanted_type:
            raise AddError(
                f"unsupported input dtype {declared.dtype} of {declared.name!r}; the preprocessing makes "
                f"{wanted_type}"
            )
        if declared.shape is None:
            continue
        if len(declared.shape) != len(expected) + 1:
            raise AddError(
                f"input {declared.name!r} has rank {len(declared.shape)} {declared.shape}; the preprocessing "
                f"makes a batch of {expected}, rank {len(expected) + 1}"
            )
        shown = ", ".join("width" if d == -1 else str(d) for d in expected)
        height = preprocessing.height if isinstance(preprocessing, ImagePreprocessing) else "<height>"
        for have, want in zip(declared.shape[1:], expected, strict=True):
            if want == -1 and have is not None:
                raise AddError(
                    f"input {declared.name!r} has shape {declared.shape}, a fixed width of {have}; the "
                    f"preprocessing makes a dynamic width (declare size={have}x{height} instead)"
                )
            if have is not None and want != -1 and have != want:
                raise AddError(
                    f"input {declared.name!r} has shape {declared.shape}; the preprocessing makes "
                    f"[batch, {shown}] (change --preprocess to match)"
                )


def _labels(request: AddRequest) -> list[str]:
    meaning, fewest = LABELS_MEAN[request.task]
    if fewest == 0:
        if request.labels_file is not None:
            raise AddError(f"--labels: {a_task(request.task)} model has no labels ({meaning})")
        return []
    if request.labels_file is None:
        raise AddError(
            f"{a_task(request.task)} model needs --labels (its {meaning}, one a line, in output order)"
        )
    return read_labels(request.labels_file, request.task)


def _run_reference(
    model: LoadedModel, preprocess: Preprocessor, decoded: list[Any]
) -> tuple[list[list[npt.NDArray[np.float32]]], float]:
    """The model's raw outputs per batch of reference samples, and samples per second in-process."""
    started = time.perf_counter()
    raw: list[list[npt.NDArray[np.float32]]] = []
    for start in range(0, len(decoded), BATCH):
        try:
            raw.append(model.run(preprocess.batch(decoded[start : start + BATCH])))
        except Exception as exc:  # noqa: BLE001 - any failure of the user's model on valid input is reported
            raise AddError(f"the model fails on the reference samples: {type(exc).__name__}: {exc}") from None
    return raw, len(decoded) / max(time.perf_counter() - started, 1e-9)


def _task_reference(
    card: ModelCard,
    raw: list[list[npt.NDArray[np.float32]]],
    decoded: list[Any],
    work_dir: Path,
    projection: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None,
) -> dict[str, Any]:
    """Every reference batch's raw outputs turned into the task's outputs and predictions, as Triton and
    the workers will, and the drift reference of their signals (:mod:`dlstream.domain.drift_signals`)."""
    assert card.source is not None
    event = new_request(card.modality, b"", content_type="application/octet-stream", source="models add")
    timing = Timing(queued_ms=0.0, inference_ms=0.0, total_ms=0.0)
    index = {label: i for i, label in enumerate(card.labels)}
    found: list[Signals] = []
    vocabulary = None
    if isinstance(card.task, SequenceTask):
        vocabulary = read_vocabulary(work_dir / card.task.vocabulary)
    for number, outputs in enumerate(raw):
        items = decoded[number * BATCH : (number + 1) * BATCH]
        try:
            named = runner_outputs(card, outputs, items, projection, vocabulary)
        except OutputShapeError as exc:
            raise AddError(f"the model's outputs do not fit {a_task(card.task.kind)} model: {exc}") from None
        for row in range(len(items)):
            answer = Inference(card.name, "1", {name: array[row] for name, array in named.items()})
            try:
                prediction = task_prediction(
                    event, card, answer, timing=timing, k=1, full_probabilities_max_classes=0
                )
            except ContractError as exc:
                raise AddError(
                    f"the model's outputs do not fit {a_task(card.task.kind)} model: {exc.message}"
                ) from None
            found.append(signals(prediction.data, card.labels, index))
    names = categories(card.task.kind, card.labels)
    scalars = np.asarray([s.scalar for s in found], dtype=np.float64)
    floor = float(scalars.min()) - 1.0 if len(scalars) else 0.0
    # Scores whose argmax is each prediction's category and whose max its scalar: what the reference's
    # classes and confidence are read from.
    scores = np.full((len(found), len(names)), floor, dtype=np.float64)
    for row, signal in enumerate(found):
        scores[row, signal.category or 0] = signal.scalar
    vectors = np.asarray([s.vector for s in found], dtype=np.float32).reshape(len(found), -1)
    statistics = reference_statistics(scores.astype(np.float32), vectors, names, seed=0)
    return {**statistics, "task": card.task.kind, "card_labels": card.labels}


def prepare(request: AddRequest, work_dir: Path) -> Prepared:
    """Check everything and run the reference samples in-process; ``work_dir`` receives files to be written
    with the version (the model file, a tokenizer, a vocabulary).

    Raises:
        AddError: naming what is wrong.
    """
    if not re.match(MODEL_NAME_PATTERN, request.name):
        raise AddError(f"model name {request.name!r} must match {MODEL_NAME_PATTERN}")
    if request.source_format not in get_args(SourceFormat):
        raise AddError(f"unsupported model format {request.source_format}")
    source_format: SourceFormat = "onnx" if request.source_format == "onnx" else "torchscript"
    try:
        task, source_options = parse_task(request.task, request.task_options, work_dir)
    except TaskOptionError as exc:
        raise AddError(str(exc)) from None
    classifier = isinstance(task, ClassificationTask)
    labels = _labels(request)
    preprocessing = parse_preprocessing(request.modality, request.preprocess, work_dir)
    if isinstance(task, DetectionTask) and not isinstance(preprocessing, ImagePreprocessing):
        raise AddError(f"a detection model takes images, not {request.modality.value}")
    model_name = "model.onnx" if source_format == "onnx" else "model.pt"
    if not request.model_file.is_file():
        raise AddError(f"model file {request.model_file} does not exist")
    shutil.copy2(request.model_file, work_dir / model_name)
    inputs = list(preprocessing.inputs) if isinstance(preprocessing, TokensPreprocessing) else []
    try:
        model = load_model_file(work_dir / model_name, source_format, "cpu", inputs)
    except ModelFileError as exc:
        raise AddError(str(exc)) from None
    _check_inputs(model, preprocessing)
    reference = read_reference(request.reference_dir, request.modality, labels if classifier else [])
    preprocess = preprocessor(preprocessing, "cpu", root=work_dir)
    decoded = _decode_all(preprocess, reference)
    embedding_index = request.embedding_output
    if isinstance(task, EmbeddingTask) and embedding_index is None:
        embedding_index = 0  # the drift monitor tests a projection of the vector itself
    source = SourceModel(
        file=model_name,
        inputs=[i.name for i in model.inputs] or inputs,
        scores=0,
        scores_are=request.scores_are,
        embedding=embedding_index,
        **source_options,
    )
    raw, samples_per_s = _run_reference(model, preprocess, decoded)
    widths = [o.reshape(len(o), -1).shape[1] for o in raw[0]]
    if classifier and widths[0] != len(labels):
        raise AddError(
            f"the model's output 0 has {widths[0]} values per sample; the labels file names {len(labels)}"
        )
    if embedding_index is not None and embedding_index >= len(widths):
        raise AddError(f"--embedding-output {embedding_index}: the model has {len(widths)} outputs")
    named_outputs = [i for i in (source.boxes, source.box_classes) if i is not None]
    if named_outputs and max(named_outputs) >= len(widths):
        raise AddError(
            f"the model has {len(widths)} outputs; the task options name output {max(named_outputs)}"
        )
    merged = (
        [np.concatenate([batch[i] for batch in raw]) for i in range(len(widths))]
        if classifier or (embedding_index is not None)
        else []
    )
    probabilities: npt.NDArray[np.float32] | None = None
    embedding = np.zeros((len(decoded), 0), dtype=np.float32)
    if classifier:
        probabilities, embedding = source_outputs(merged, source, None)
    elif embedding_index is not None:
        embedding = merged[embedding_index].reshape(len(decoded), -1).astype(np.float32)
    projection = None
    if embedding_index is not None:
        projection = pca_projection(embedding, EMBEDDING_DIMS)
        mean, components = projection
        embedding = ((embedding - mean) @ components.T).astype(np.float32)
        source = source.model_copy(update={"projection": PROJECTION_FILE})
    metrics: dict[str, Any] = {
        "samples": len(decoded),
        "evaluation": "the reference samples given to models add",
        "samples_per_s_in_process": round(samples_per_s, 1),
    }
    if classifier:
        metrics["classes"] = len(labels)
    if probabilities is not None and reference.labels is not None:
        report = classification_report(np.asarray(reference.labels), probabilities.argmax(axis=1), labels)
        metrics["accuracy"] = report["accuracy"]
    retraining = (
        Retraining(kind="command", command=list(request.train_command))
        if request.train_command
        else Retraining()
    )
    try:
        card = ModelCard(
            name=request.name,
            version=1,
            modality=request.modality,
            task=task,
            labels=labels,
            outputs=Outputs(
                embedding="EMBEDDING" if embedding_index is not None else None,
                embedding_dims=EMBEDDING_DIMS if embedding_index is not None else 0,
            ),
            preprocessing=preprocessing,
            source_format=source_format,
            source=source,
            default=request.default,
            metrics=metrics,
            retraining=retraining,
        )
    except ValidationError as exc:
        raise AddError(f"the model card does not validate: {exc.errors()[0]['msg']}") from None
    task_reference = None if classifier else _task_reference(card, raw, decoded, work_dir, projection)
    return Prepared(
        card, model, probabilities, embedding, projection, samples_per_s, reference, task_reference
    )


def write_model(repo: Path, prepared: Prepared, work_dir: Path, reference_dir: Path) -> Path:
    """Assemble ``<repo>/<name>/`` (version 1, the configs, and a copy of the reference samples that
    retraining evaluates on) beside the repository's models and rename it into place."""
    card = prepared.card
    final = repo / card.name
    staging = repo / f".{card.name}.adding"
    if staging.exists():
        shutil.rmtree(staging)
    version_dir = staging / "1"
    version_dir.mkdir(parents=True)
    try:
        for item in work_dir.iterdir():
            shutil.copy2(item, version_dir / item.name)
        shutil.copy2(TRITON_MODEL_FILE, version_dir / "model.py")
        if prepared.projection is not None:
            mean, components = prepared.projection
            np.savez(version_dir / PROJECTION_FILE, mean=mean, components=components)
        statistics = prepared.task_reference
        if prepared.probabilities is not None:
            statistics = reference_statistics(prepared.probabilities, prepared.embedding, card.labels, seed=0)
        (version_dir / "reference.json").write_text(json.dumps(statistics))
        (version_dir / "metrics.json").write_text(
            json.dumps({"model": card.name, "version": 1, **card.metrics})
        )
        (version_dir / CARD_FILE).write_text(card.to_json())
        write_configs(staging, card)
        suffixes = REFERENCE_SUFFIXES[card.modality]
        shutil.copytree(
            reference_dir,
            staging / "reference",
            ignore=lambda folder, names: [
                n for n in names if (Path(folder) / n).is_file() and Path(n).suffix.lower() not in suffixes
            ],
        )
        if final.exists():
            raise AddError(f"a model named {card.name!r} exists in {repo}")
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


@dataclass(frozen=True)
class Added:
    """A model written as version 1: where, its card, and what the checks measured."""

    path: Path
    card: ModelCard
    samples_per_s: float


def add_model(repo: Path, request: AddRequest) -> Added:
    """Check the request, then write the model into ``repo`` (all of it, or nothing).

    Raises:
        AddError: naming what is wrong; the repository is as it was.
    """
    if (repo / request.name).exists():
        raise AddError(f"a model named {request.name!r} exists in {repo}; pick another name or remove it")
    with tempfile.TemporaryDirectory(prefix="dlstream-add-") as tmp:
        work_dir = Path(tmp)
        prepared = prepare(request, work_dir)
        path = write_model(repo, prepared, work_dir, request.reference_dir)
    return Added(path, prepared.card, prepared.samples_per_s)
