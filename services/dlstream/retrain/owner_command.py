"""Retraining an added model with its owner's training command.

The job lays out a work folder, runs the command the card names, and takes the candidate model file it
writes; the candidate is then judged and written as version N+1 like any other.

The command (argv; ``{data}``, ``{labels}``, ``{model}``, ``{output}`` and ``{work}`` are replaced, and the
same paths are in the environment) gets:

- ``{data}`` / ``DLSTREAM_TRAIN_DATA``: a folder of the labelled feedback's payloads (``000001.png`` ...) with
  ``labels.csv`` (``file,label``) beside them (``{labels}`` / ``DLSTREAM_TRAIN_LABELS``);
- ``{model}`` / ``DLSTREAM_SERVING_MODEL``: the serving version's model file (ONNX or TorchScript), with its
  ``card.json`` beside it (labels, preprocessing);
- ``{output}`` / ``DLSTREAM_CANDIDATE``: where to write the candidate, in the same format, same inputs and
  outputs;
- ``{work}`` / ``DLSTREAM_WORK``: the work folder; the command runs there and its output goes to the job log.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dlstream.domain.card import CARD_FILE, ModelCard, read_card
from dlstream.domain.errors import DlstreamError
from dlstream.models.export import EMBEDDING_DIMS
from dlstream.models.preprocess.declared import preprocessor
from dlstream.models.reference import pca_projection, reference_statistics
from dlstream.models.retraining import Feedback
from dlstream.models.serving import source_outputs
from dlstream.models.source_models import load_model_file
from dlstream.models.triton_config import write_configs
from dlstream.repository.add import PROJECTION_FILE, REFERENCE_SUFFIXES, read_reference

REFERENCE_FOLDER = "reference"
COMMAND_TIMEOUT_S = 4 * 3600.0


class CommandError(DlstreamError):
    """The training command failed or wrote no candidate."""


@dataclass(frozen=True)
class Scored:
    """A model file's probabilities and raw embedding on some payloads."""

    probabilities: npt.NDArray[np.float32]
    embedding: npt.NDArray[np.float32]

    def accuracy(self, labels: list[int]) -> float:
        """Top-1 accuracy against label indices."""
        if not labels:
            return 0.0
        return float((self.probabilities.argmax(axis=1) == np.asarray(labels)).mean())


def score(card: ModelCard, root: Path, model_file: Path, payloads: list[bytes]) -> Scored:
    """Run payloads through a model file as the card declares (raw embedding, unprojected)."""
    if card.source is None or card.source_format == "triton" or card.preprocessing is None:
        raise CommandError(f"{card.name} is not an added ONNX or TorchScript model")
    preprocess = preprocessor(card.preprocessing, "cpu", root=root)
    model = load_model_file(model_file, card.source_format, "cpu", card.source.inputs)
    source = card.source.model_copy(update={"projection": None})
    probabilities, embeddings = [], []
    for start in range(0, len(payloads), 32):
        decoded = [preprocess.decode(p) for p in payloads[start : start + 32]]
        p, e = source_outputs(model.run(preprocess.batch(decoded)), source, None)
        probabilities.append(p)
        embeddings.append(e)
    return Scored(np.concatenate(probabilities), np.concatenate(embeddings))


def base_reference(model_dir: Path, card: ModelCard) -> tuple[list[bytes], list[int] | None]:
    """The reference samples kept when the model was added (labelled when its folder named classes)."""
    folder = model_dir / REFERENCE_FOLDER
    if not folder.is_dir():
        return [], None
    reference = read_reference(folder, card.modality, card.labels)
    return reference.payloads, reference.labels


def run_command(card: ModelCard, serving_dir: Path, feedback: Feedback, work: Path, log_path: Path) -> Path:
    """Lay out the work folder, run the card's command, and return the candidate file it wrote.

    Raises:
        CommandError: the command exited non-zero, timed out, or wrote nothing.
    """
    if card.source is None or not card.retraining.command:
        raise CommandError(f"{card.name} names no training command")
    data = work / "data"
    data.mkdir(parents=True)
    suffix = REFERENCE_SUFFIXES[card.modality][0]
    with (data / "labels.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["file", "label"])
        for i, (payload, label) in enumerate(
            zip(feedback.train_payloads, feedback.train_labels, strict=True)
        ):
            name = f"{i + 1:06d}{suffix}"
            (data / name).write_bytes(payload)
            writer.writerow([name, card.labels[label]])
    serving = work / "serving"
    serving.mkdir()
    shutil.copy2(serving_dir / card.source.file, serving / card.source.file)
    shutil.copy2(serving_dir / CARD_FILE, serving / CARD_FILE)
    output = work / "candidate" / card.source.file
    output.parent.mkdir()
    paths = {
        "data": str(data),
        "labels": str(data / "labels.csv"),
        "model": str(serving / card.source.file),
        "output": str(output),
        "work": str(work),
    }
    argv = [part.format(**paths) for part in card.retraining.command]
    env = {**os.environ, **{f"DLSTREAM_{k.upper()}": v for k, v in _env_names(paths).items()}}
    with log_path.open("ab") as log:
        try:
            done = subprocess.run(
                argv,
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CommandError(f"training command {argv[0]!r} could not run: {exc}") from exc
    if done.returncode != 0:
        raise CommandError(f"training command exited with {done.returncode}; see {log_path}")
    if not output.is_file():
        raise CommandError(f"training command wrote no candidate at {output}")
    return output


def _env_names(paths: dict[str, str]) -> dict[str, str]:
    return {
        "train_data": paths["data"],
        "train_labels": paths["labels"],
        "serving_model": paths["model"],
        "candidate": paths["output"],
        "work": paths["work"],
    }


def write_candidate(
    model_dir: Path,
    serving_dir: Path,
    candidate: Path,
    *,
    version: int,
    reference_payloads: list[bytes],
    metrics: dict[str, Any],
    reference_components: list[int] | None = None,
) -> ModelCard:
    """Write version ``version``: the serving version's files with the candidate model file, a projection and
    reference statistics refitted on the candidate's outputs, and its card; then the configs."""
    card = read_card(serving_dir)
    assert card.source is not None
    staging = model_dir / f".{version}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(serving_dir, staging)
    try:
        shutil.copy2(candidate, staging / card.source.file)
        scored = score(card, staging, staging / card.source.file, reference_payloads)
        embedding = scored.embedding
        if card.source.embedding is not None:
            mean, components = pca_projection(embedding, EMBEDDING_DIMS)
            np.savez(staging / PROJECTION_FILE, mean=mean, components=components)
            embedding = ((embedding - mean) @ components.T).astype(np.float32)
        parts = None if reference_components is None else np.asarray(reference_components, dtype=np.int64)
        statistics = reference_statistics(scored.probabilities, embedding, card.labels, 0, parts)
        (staging / "reference.json").write_text(json.dumps(statistics))
        new_card = card.model_copy(update={"version": version, "metrics": metrics})
        (staging / CARD_FILE).write_text(new_card.to_json())
        (staging / "metrics.json").write_text(json.dumps({"model": card.name, "version": version, **metrics}))
        staging.rename(model_dir / str(version))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_configs(model_dir, new_card)
    return new_card
