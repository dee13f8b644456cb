"""deploy/kubernetes/pipeline.yaml, as a user would apply it: valid against the Kubernetes API's schemas
(kubernetes-validate ships them: nothing is fetched), its settings accepted by settings.py, its probes the
endpoints that answer without the token, and its image the project's version."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import web.views
from settings import load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "kubernetes" / "pipeline.yaml"
# The oldest Kubernetes release still commonly run, and the newest the validator knows.
VERSIONS = ("1.30.0", "1.37.0")


def _documents() -> dict[str, dict[str, Any]]:
    return {document["kind"]: document for document in yaml.safe_load_all(EXAMPLE.read_text())}


def _pod_specs() -> list[dict[str, Any]]:
    documents = _documents()
    return [documents["Deployment"]["spec"]["template"]["spec"],
            documents["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_resource_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    documents = _documents()
    assert set(documents) == {"ConfigMap", "Deployment", "Service", "CronJob"}
    for document in documents.values():
        kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_refuses_a_mistake() -> None:
    """A misspelled field and a wrong type each fail, so the test above can fail."""
    deployment = _documents()["Deployment"]
    misspelled = copy.deepcopy(deployment)
    container = misspelled["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "three"
    for broken in (misspelled, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def _secret_names() -> list[str]:
    """The Secret's keys, as the file's comment tells the user to create them."""
    return re.findall(r"--from-literal=([A-Z_]+)=", EXAMPLE.read_text())


def test_its_settings_are_accepted_by_the_worker_and_the_batch_job() -> None:
    config = _documents()["ConfigMap"]["data"]
    secrets = {"WEB_AUTH_TOKEN": "t" * 32, "KAFKA_SASL_PASSWORD": "p" * 12,
               "REDIS_URL": "rediss://:password@redis.internal:6379/0"}
    assert sorted(_secret_names()) == sorted(secrets)
    worker = load({**config, **secrets, "WEB_HOST": "10.1.2.3"})
    assert worker.kafka.security_protocol == "SASL_SSL" and worker.web.bind == "0.0.0.0"
    assert worker.web.peer_hosts.matches("10.20.30.40")
    load({**config, **secrets})  # the CronJob's container: no WEB_HOST
    deployment = _documents()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert [item["name"] for item in deployment["env"]] == ["WEB_HOST"]
    assert deployment["ports"][0]["containerPort"] == int(config["WEB_PORT"])
    assert deployment["volumeMounts"][0]["mountPath"] in config["STATE_DIR"]


def test_its_probes_answer_without_the_token_and_no_service_becomes_a_variable() -> None:
    container = _documents()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    probed = {container[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")}
    open_paths = {f"/v1{route.uri}" for route in web.views.blueprint.routes if route.handler.open_to_all}
    assert probed and probed <= open_paths
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
    assert all(spec["enableServiceLinks"] is False for spec in _pod_specs())


def test_its_image_is_the_projects_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {container["image"] for spec in _pod_specs() for container in spec["containers"]}
    assert {image.rsplit(":", 1)[1] for image in images} == {version}
