"""The retraining Job for Kubernetes, rendered from the template that k8s/ ships (pure; no API calls).

The drift monitor reads the template from the ``retrain-job-template`` ConfigMap (the file
``k8s/base/retrain/job-template.yaml``, mounted into its pod) and fills in only what names the job's work: the
model, the alert that triggered it, and the namespace.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

MODEL_LABEL = "dlstream.io/model"
ALERT_ANNOTATION = "dlstream.io/alert-id"


def load_job_template(path: Path) -> dict[str, Any]:
    """The Job template as a dict.

    Raises:
        ValueError: the file is not a single batch/v1 Job with one container.
    """
    template = yaml.safe_load(path.read_text())
    if (
        not isinstance(template, dict)
        or template.get("kind") != "Job"
        or template.get("apiVersion") != "batch/v1"
    ):
        raise ValueError(f"{path} is not a batch/v1 Job")
    if len(template["spec"]["template"]["spec"]["containers"]) != 1:
        raise ValueError(f"{path}: the retraining Job must have exactly one container")
    return template


def _dns_label(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40] or "model"


def render_retrain_job(
    template: Mapping[str, Any], *, model: str, alert_id: str, namespace: str
) -> dict[str, Any]:
    """The Job that retrains ``model`` after alert ``alert_id``: the template with the model filled in."""
    job = copy.deepcopy(dict(template))
    metadata = job.setdefault("metadata", {})
    metadata["generateName"] = f"{metadata.get('generateName', 'dlstream-retrain-')}{_dns_label(model)}-"
    metadata["namespace"] = namespace
    metadata.setdefault("labels", {})[MODEL_LABEL] = _dns_label(model)
    metadata.setdefault("annotations", {})[ALERT_ANNOTATION] = alert_id
    pod = job["spec"]["template"]
    pod.setdefault("metadata", {}).setdefault("labels", {})[MODEL_LABEL] = _dns_label(model)
    container = pod["spec"]["containers"][0]
    container.setdefault("env", []).extend(
        [
            {"name": "DLSTREAM_RETRAIN__MODEL", "value": model},
            {"name": "DLSTREAM_RETRAIN__ALERT_ID", "value": alert_id},
        ]
    )
    return job
