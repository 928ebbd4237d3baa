"""The deploy phase and lineage on a real registry: the champion answers a test sample, traced back."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def deployed(registry_env, tmp_path, monkeypatch):
    from config.plan import load_plan
    from config.settings import Settings

    registry_env.test.save(registry_env.settings.layout.prepared_dir, "test")
    settings = Settings(
        root=registry_env.root,
        var_dir=registry_env.root / "var",
        plan_path=registry_env.environment["LIFECYCLE_PLAN_PATH"],
        store_url=f"sqlite:///{tmp_path / 'predictions.db'}",
    )
    from serving.deploy import check_deployment

    return settings, check_deployment(settings, load_plan(settings.plan_path))


def test_deploy_check_serves_the_champion_on_a_test_sample(deployed, registry_env):
    from models.registry import alias_version

    settings, result = deployed
    assert result.model_version == alias_version(registry_env.client, registry_env.name, "champion")
    assert result.backend == "onnx"
    assert result.sample_id == str(registry_env.test.sample_ids[0])
    assert result.true_label == int(registry_env.test.labels[0])
    assert result.label == str(result.predicted)
    assert result.latency_ms > 0 and result.seconds_to_ready > 0


def test_lineage_traces_the_prediction_to_run_data_commit_and_plan(deployed, registry_env):
    from typer.testing import CliRunner

    from pipeline.cli import app
    from serving.lineage import LineageError, trace_prediction
    from serving.store.reader import PredictionReader

    settings, result = deployed
    with PredictionReader(settings.resolved_store_url) as store:
        chain = trace_prediction(registry_env.client, result.request_id, store)
        with pytest.raises(LineageError, match="no such prediction"):
            trace_prediction(registry_env.client, "unknown-id", store)
    version = registry_env.client.get_model_version(registry_env.name, result.model_version)
    assert chain.model_version == result.model_version
    assert chain.run_id == version.run_id
    assert chain.model_sha256 == version.tags["model_sha256"]
    assert chain.git_commit == version.tags["git_commit"]
    assert chain.plan_hash == version.tags["plan_hash"] and len(chain.plan_hash) == 16
    assert chain.data_md5 == json.loads(version.tags["data_md5"])
    assert chain.experiment == "serving-tests"
    assert [link for link, _ in chain.links()] == [
        "prediction", "model version", "MLflow run", "data version", "git commit", "plan hash",
    ]  # fmt: skip
    environment = {
        **registry_env.environment,
        "LIFECYCLE_STORE_URL": settings.resolved_store_url,
    }
    runner = CliRunner()
    printed = runner.invoke(app, ["lineage", result.request_id, "--json"], env=environment)
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output)["run_id"] == version.run_id
    missing = runner.invoke(app, ["lineage", "nope"], env=environment)
    assert missing.exit_code == 1 and "no such prediction" in missing.output
