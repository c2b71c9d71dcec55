"""``models add --task T --task-option KEY=VALUE``: the task of an added model and what its outputs mean,
checked against the task, with errors that name the option and the tasks it belongs to."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from dlstream.domain.card import (
    ClassificationTask,
    DetectionTask,
    EmbeddingTask,
    MultilabelTask,
    RegressionTask,
    SequenceTask,
    SourceModel,
    Task,
    TaskName,
    a_task,
)
from dlstream.domain.errors import DlstreamError

TASK_SCHEMAS: dict[str, type[BaseModel]] = {
    "classification": ClassificationTask,
    "multilabel": MultilabelTask,
    "detection": DetectionTask,
    "embedding": EmbeddingTask,
    "regression": RegressionTask,
    "sequence": SequenceTask,
}
# What a detector's raw outputs are (they go to the card's source model, not to its task).
DETECTION_OUTPUTS = ("boxes", "box_classes", "box_format", "boxes_normalised")
VOCABULARY_FILE = "vocabulary.txt"


class TaskOptionError(DlstreamError):
    """A task option that the task does not take, or a value it refuses."""


def _owners(key: str) -> list[str]:
    owners = [name for name, schema in TASK_SCHEMAS.items() if key in schema.model_fields and key != "kind"]
    return owners + (["detection"] if key in DETECTION_OUTPUTS else [])


def number_or_text(text: str) -> Any:
    """An option's value: an int, else a float, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false", "yes", "no"):
        return lowered in ("true", "yes")
    if lowered in ("none", "null"):
        return None
    return number_or_text(text)


def parse_task(task: TaskName, options: Mapping[str, str], work_dir: Path) -> tuple[Task, dict[str, Any]]:
    """The task of ``--task`` with its ``--task-option`` pairs, and the source-model fields among them (how
    a detector writes its boxes). A sequence model's ``vocabulary`` (a file) is copied into ``work_dir``.

    Raises:
        TaskOptionError: an option of another task, or a value the task refuses.
    """
    schema = TASK_SCHEMAS[task]
    task_values: dict[str, Any] = {"kind": task}
    source_values: dict[str, Any] = {}
    for key, text in options.items():
        if task == "multilabel" and key.startswith("threshold."):
            continue
        if task == "detection" and key in DETECTION_OUTPUTS:
            source_values[key] = _value(text)
        elif key in schema.model_fields and key != "kind":
            task_values[key] = _value(text)
        else:
            owners = _owners(key)
            where = f"it applies to {', '.join(owners)} models" if owners else "no task takes it"
            raise TaskOptionError(f"--task-option {key}: {a_task(task)} model does not take it ({where})")
    if task == "multilabel":
        thresholds = {
            k.removeprefix("threshold."): v for k, v in options.items() if k.startswith("threshold.")
        }
        if thresholds:
            task_values["thresholds"] = {k: float(v) for k, v in thresholds.items()}
    if task == "sequence":
        source = Path(str(task_values.get("vocabulary", "")))
        if not source.is_file():
            raise TaskOptionError(
                "a sequence model needs --task-option vocabulary=FILE (one token per line, in output order)"
            )
        shutil.copy2(source, work_dir / VOCABULARY_FILE)
        task_values["vocabulary"] = VOCABULARY_FILE
    try:
        parsed: Task = TypeAdapter(Task).validate_python(task_values)
        if source_values:
            SourceModel.model_validate({"file": "model", **source_values})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'][1:] or e['loc']))}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise TaskOptionError(f"--task-option for {a_task(task)} model: {problems}") from None
    return parsed, source_values
