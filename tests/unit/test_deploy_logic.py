"""Rendering the retraining Job from its template, and TLS options of the asyncio Kafka clients."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from dlstream.adapters.faust.app import faust_credentials
from dlstream.adapters.kafka.connection import aiokafka_options, client_options, ssl_context
from dlstream.config.settings import KafkaSettings
from dlstream.retrain.job_manifest import load_job_template, render_retrain_job

pytestmark = pytest.mark.unit

TEMPLATE = Path(__file__).resolve().parents[2] / "k8s" / "base" / "retrain" / "job-template.yaml"


def test_rendering_fills_in_the_model_and_leaves_the_template_untouched() -> None:
    template = load_job_template(TEMPLATE)
    before = repr(template)
    job = render_retrain_job(template, model="Text_Topics", alert_id="alert-7", namespace="ml")
    assert repr(template) == before
    assert job["metadata"]["generateName"] == "dlstream-retrain-text-topics-"
    assert job["metadata"]["labels"]["dlstream.io/model"] == "text-topics"
    assert job["metadata"]["annotations"]["dlstream.io/alert-id"] == "alert-7"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "DLSTREAM_RETRAIN__MODEL", "value": "Text_Topics"} in container["env"]
    assert container["resources"] == template["spec"]["template"]["spec"]["containers"][0]["resources"]


def test_a_template_that_is_not_a_job_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text("apiVersion: apps/v1\nkind: Deployment\n")
    with pytest.raises(ValueError, match="not a batch/v1 Job"):
        load_job_template(bad)


def test_plaintext_kafka_needs_no_tls() -> None:
    settings = KafkaSettings()
    assert ssl_context(settings) is None
    assert "ssl_context" not in aiokafka_options(settings)
    assert faust_credentials(settings) is None


def test_ssl_kafka_gets_a_verifying_context_for_aiokafka_and_faust() -> None:
    settings = KafkaSettings(security_protocol="SSL")
    context = ssl_context(settings)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert isinstance(aiokafka_options(settings)["ssl_context"], ssl.SSLContext)
    assert faust_credentials(settings) is not None


def test_the_ca_file_goes_to_kafka_python_by_name_and_to_aiokafka_as_a_context(tmp_path: Path) -> None:
    settings = KafkaSettings(security_protocol="SSL", ssl_cafile=tmp_path / "missing-ca.crt")
    assert client_options(settings)["ssl_cafile"] == str(tmp_path / "missing-ca.crt")
    assert "ssl_cafile" not in aiokafka_options(KafkaSettings())
    with pytest.raises(FileNotFoundError):
        aiokafka_options(settings)
