"""The registry on a real MLflow sqlite store: resolve (hash-verified), aliases, the promotion ledger."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from models import registry
from models.client import tracking_client
from models.lineage import file_sha256
from models.names import KERAS_FILE_IN_MODEL
from models.registry import (
    ModelIntegrityError,
    ModelNotFoundError,
    alias_version,
    resolve_model,
)


def test_resolve_round_trip(trained_version, client, tiny_splits, tmp_path: Path):
    version, result = trained_version
    assert alias_version(client, version.model_name, "champion") is None
    client.set_registered_model_alias(version.model_name, "champion", version.version)
    assert alias_version(client, version.model_name, "champion") == version.version

    resolved = resolve_model(client, version.model_name, "champion", dst=tmp_path / "dl")

    assert resolved.version == version.version
    assert resolved.run_id == version.run_id
    assert resolved.alias == "champion"
    assert resolved.sha256 == version.sha256 == file_sha256(resolved.model_path)
    assert resolved.meta == tiny_splits["train"].meta
    np.testing.assert_allclose(resolved.input_example, tiny_splits["train"].features[:3], rtol=1e-6)
    assert resolved.metrics and all(isinstance(v, float) for v in resolved.metrics.values())
    loaded = keras.saving.load_model(resolved.model_path)
    x = tiny_splits["test"].features[:5]
    np.testing.assert_allclose(loaded(x, training=False), result.model(x, training=False), atol=1e-6)


def test_resolve_by_version_and_missing_alias_or_version(trained_version, client, tmp_path: Path):
    version, _ = trained_version
    resolved = resolve_model(client, version.model_name, version=version.version, dst=tmp_path / "dl")
    assert resolved.alias is None
    assert resolved.version == version.version
    with pytest.raises(ModelNotFoundError, match="alias 'champion'"):
        resolve_model(client, version.model_name, "champion")
    with pytest.raises(ModelNotFoundError, match="v99"):
        resolve_model(client, version.model_name, version="99")
    assert alias_version(client, "no-such-model") is None


def test_tampered_artifact_raises_integrity_error(trained_version, client, tmp_path: Path):
    version, _ = trained_version
    source = client.get_model_version_download_uri(version.model_name, version.version)
    # The store is a local folder: find the registered file in place and change one byte.
    store_file = Path(source.removeprefix("file://")) / KERAS_FILE_IN_MODEL
    assert store_file.is_file(), source
    data = bytearray(store_file.read_bytes())
    data[-1] ^= 0xFF
    store_file.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        resolve_model(client, version.model_name, version=version.version, dst=tmp_path / "dl")


class FakeVerdict:
    """The registry reads only ``passed`` and ``candidate_version`` off a verdict."""

    def __init__(self, passed: bool, candidate_version: str | None = None):
        self.passed = passed
        self.candidate_version = candidate_version


@pytest.fixture
def three_versions(client, tmp_path: Path):
    """A registered model with versions 1..3 (registry entries only; alias moves don't read the files)."""
    client.create_registered_model("ledgered")
    for _ in range(3):
        client.create_model_version("ledgered", source=(tmp_path / "model").as_uri())
    return client


def test_promote_needs_a_passing_verdict_or_force_with_reason(three_versions):
    client = three_versions
    with pytest.raises(registry.PromotionRefusedError, match="needs a passing gate verdict"):
        registry.promote(client, "ledgered", "1", None, reason="")
    with pytest.raises(registry.PromotionRefusedError, match="gate failed"):
        registry.promote(client, "ledgered", "1", FakeVerdict(False, "1"), reason="", report_ref="r.json")
    with pytest.raises(registry.PromotionRefusedError, match="needs a reason"):
        registry.promote(client, "ledgered", "1", None, reason="  ", force=True)
    with pytest.raises(registry.PromotionRefusedError, match="verdict on ledgered v1. Received one on v2"):
        registry.promote(client, "ledgered", "1", FakeVerdict(True, "2"), reason="")
    assert alias_version(client, "ledgered") is None  # nothing moved
    assert registry.read_ledger(client, "ledgered") == []
    with pytest.raises(ModelNotFoundError, match="v7"):
        registry.promote(client, "ledgered", "7", FakeVerdict(True), reason="")


def test_every_move_is_in_the_ledger_and_rollback_walks_back(three_versions, mlflow_env):
    client = three_versions
    registry.promote(
        client, "ledgered", "1", FakeVerdict(True, "1"), reason="first", report_ref="runs:/a/g.json"
    )
    registry.mark_challenger(client, "ledgered", "2", FakeVerdict(True, "2"), report_ref="runs:/b/g.json")
    registry.promote(client, "ledgered", "2", FakeVerdict(True, "2"), reason="", report_ref="runs:/b/g.json")
    registry.promote(client, "ledgered", "3", None, reason="hotfix", force=True)
    assert alias_version(client, "ledgered") == "3"

    entry = registry.rollback(client, "ledgered", reason="bad in prod")
    assert (entry.version, entry.previous_version, entry.action) == ("2", "3", "rollback")
    assert alias_version(client, "ledgered") == "2"
    registry.rollback(client, "ledgered")  # a second rollback walks further back
    assert alias_version(client, "ledgered") == "1"
    with pytest.raises(registry.RegistryError, match="earlier 'champion'"):
        registry.rollback(client, "ledgered")
    assert alias_version(client, "ledgered") == "1"
    assert alias_version(client, "ledgered", "challenger") == "2"

    # The ledger survives a new client (it lives in the MLflow DB) and holds every move, in order.
    ledger = registry.read_ledger(tracking_client(mlflow_env), "ledgered")
    rows = [(e.index, e.alias, e.previous_version, e.version, e.action, e.forced) for e in ledger]
    assert rows == [
        (1, "champion", None, "1", "promote", False),
        (2, "challenger", None, "2", "challenger", False),
        (3, "champion", "1", "2", "promote", False),
        (4, "champion", "2", "3", "promote", True),
        (5, "champion", "3", "2", "rollback", False),
        (6, "champion", "2", "1", "rollback", False),
    ]
    assert ledger[0].reason == "first" and ledger[0].report_ref == "runs:/a/g.json"
    assert ledger[2].reason == "gate passed"
    assert ledger[3].reason == "hotfix" and ledger[3].report_ref is None
    assert ledger[4].reason == "bad in prod"
    assert all(e.time.endswith("+00:00") for e in ledger)
    tags = client.get_registered_model("ledgered").tags
    assert sorted(k for k in tags if k.startswith("ledger.")) == [f"ledger.{i:06d}" for i in range(1, 7)]


def test_champion_history_pushes_and_pops():
    def entry(index, version, action):
        return registry.LedgerEntry(index, "t", "champion", version, None, action, "", None, False)

    ledger = [
        entry(1, "1", "promote"),
        entry(2, "2", "promote"),
        entry(3, "1", "rollback"),
        entry(4, "3", "promote"),
    ]
    assert registry.champion_history(ledger) == ["1", "3"]
    assert registry.champion_history([]) == []


def test_ledger_entries_round_trip_through_tags_and_cap_free_text():
    from models.ledger import MAX_TEXT, entries_from_tags, next_entry

    first = next_entry([], alias="champion", version="1", previous_version=None, action="promote",
                       reason="x" * (MAX_TEXT + 50), report_ref=None, forced=True)  # fmt: skip
    second = next_entry([first], alias="champion", version="2", previous_version="1", action="promote",
                        reason="ok", report_ref="runs:/r/gate/gate.json", forced=False)  # fmt: skip
    assert (first.index, second.index) == (1, 2) and len(first.reason) == MAX_TEXT
    tags = {second.tag_key: second.to_json(), "owner": "team", first.tag_key: first.to_json()}
    assert entries_from_tags(tags) == [first, second]
    assert first.tag_key == "ledger.000001"
