"""Routes through FastAPI's TestClient on real Keras models (local .keras files, no registry)."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest


def sample(n: int = 1, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 16, size=(n, 8, 8)).round(3).tolist()


def test_predict_answers_per_instance_with_version_header(make_client):
    client = make_client()
    response = client.post("/v1/predict", json={"instances": sample(3)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["X-Model-Version"] == body["model_version"] == "1"
    assert body["model_name"] == "tiny-served"
    assert len(body["predictions"]) == 3
    ids = [item["request_id"] for item in body["predictions"]]
    assert ids == [f"{body['request_id']}-{i}" for i in range(3)]
    for item in body["predictions"]:
        assert item["label"] == str(item["class_id"])
        assert abs(sum(item["probabilities"]) - 1) < 1e-5
        assert item["confidence"] == max(item["probabilities"])
        assert item["class_id"] == int(np.argmax(item["probabilities"]))


def test_predict_matches_the_keras_model(make_client, local_models):
    import keras

    client = make_client()
    instances = sample(4, seed=1)
    body = client.post("/v1/predict", json={"instances": instances}).json()
    model = keras.saving.load_model(local_models["1"].model_path, safe_mode=True)
    expected = keras.ops.convert_to_numpy(model(np.asarray(instances, dtype="float32")))
    served = np.array([item["probabilities"] for item in body["predictions"]])
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_requests_answered_together_each_get_their_own_answer_record_and_count(make_client):
    client = make_client()
    service = client.app.state.service
    instances = [sample(1, seed=seed) for seed in range(5)] + [sample(2, seed=9)]
    alone = [client.post("/v1/predict", json={"instances": rows}).json() for rows in instances]

    async def together():
        model = service.model()
        started = time.perf_counter()
        return await asyncio.gather(*(service.predict_instances(rows, model, started) for rows in instances))

    calls = service.caller.calls
    answers = client.portal.call(together)
    assert service.caller.calls == calls + 1  # one model call, one answer step for the six requests
    bodies = [json.loads(content) for content in answers]
    assert [len(body["predictions"]) for body in bodies] == [1, 1, 1, 1, 1, 2]
    assert len({body["request_id"] for body in bodies + alone}) == 12
    client.get("/metrics")  # the service's own read of what it answered: the records are handed on first
    service.writer.flush()
    for body, single, rows in zip(bodies, alone, instances, strict=True):
        predictions = body["predictions"]
        first = body["request_id"]
        expected_ids = [first] if len(rows) == 1 else [f"{first}-0", f"{first}-1"]
        assert [item["request_id"] for item in predictions] == expected_ids
        np.testing.assert_allclose(
            [item["probabilities"] for item in predictions],
            [item["probabilities"] for item in single["predictions"]],
            atol=1e-6,
        )
        for item, instance in zip(predictions, rows, strict=True):
            stored = service.reader.find(item["request_id"])
            np.testing.assert_array_equal(stored["features"], np.asarray(instance, dtype="float32"))
            assert stored["predicted_class"] == item["class_id"] and stored["model_version"] == "1"
    text = client.get("/metrics").text
    assert 'lifecycle_requests_total{endpoint="/v1/predict",status="200"} 12.0' in text
    assert 'lifecycle_predictions_total{version="1"} 14.0' in text


def predicted_count(service) -> float:
    """lifecycle_predictions_total for version 1, as recorded so far."""
    for line in service.metrics.render().decode().splitlines():
        if line.startswith('lifecycle_predictions_total{version="1"}'):
            return float(line.split()[-1])
    return 0.0


def test_predictions_are_recorded_after_their_responses_and_found_by_the_next_request(make_client):
    client = make_client()
    service = client.app.state.service

    async def scenario():
        model = service.model()
        answers = [await service.predict_instances(sample(1), model, time.perf_counter()) for _ in range(12)]
        at_answer = predicted_count(service)  # the lone client's last answers: not recorded yet
        await asyncio.sleep(0)  # the answered requests' responses go out
        await asyncio.sleep(0)  # then their records
        return [json.loads(content)["request_id"] for content in answers], at_answer, predicted_count(service)

    request_ids, at_answer, after = client.portal.call(scenario)
    assert at_answer < 12.0 and after == 12.0
    for request_id in request_ids:  # each looked up right after its answer: found
        assert client.post("/v1/feedback", json={"request_id": request_id, "label": 1}).status_code == 200

    async def answered_then_looked_up():  # in the same loop pass: the lookup hands the record on first
        content = await service.predict_instances(sample(1), service.model(), time.perf_counter())
        return await service.feedback(json.loads(content)["request_id"], 2)

    assert client.portal.call(answered_then_looked_up) == 2.0


EIGHT = [1.0] * 8


def image_with(row: int, column: int, value: object) -> list:
    """A valid 8x8 instance with one value replaced."""
    instance = [list(EIGHT) for _ in range(8)]
    instance[row][column] = value
    return instance


BAD_BODIES = [
    ("wrong shape", {"instances": [[EIGHT] * 7]}, 422, "expected each instance of shape [8, 8]"),
    ("flat instance", {"instances": [[1.0] * 64]}, 422, "got [64]"),
    ("ragged", {"instances": [[EIGHT] * 7 + [[1.0] * 7]]}, 422, "instances[0][7]: expected 8 values"),
    ("string", {"instances": [image_with(0, 0, "a")]}, 422, "[0][0][0]: expected a number, got a string"),
    ("null", {"instances": [image_with(7, 0, None)]}, 422, "instances[0][7][0]: expected a number, got null"),
    ("boolean", {"instances": [[[True] * 8] * 8]}, 422, "expected a number, got a boolean"),
    ("object", {"instances": [{"pixels": 1}]}, 422, "instances[0]: expected a list of 8, got an object"),
    ("not a list", {"instances": 5}, 422, "body.instances: Input should be a valid list"),
    ("missing field", {"rows": []}, 422, "body.instances: Field required"),
    ("empty batch", {"instances": []}, 422, "expected 1 to 8 instances, got an empty list"),
    ("oversized batch", {"instances": [[EIGHT] * 8] * 9}, 422, "at most 8 instances per request"),
    ("out of range", {"instances": [image_with(7, 7, 500.0)]}, 422, "value 500 at [7, 7] is outside"),
    ("negative out of range", {"instances": [image_with(0, 0, -100.0)]}, 422, "outside the trained range"),
    ("float32 overflow", {"instances": [image_with(0, 0, 1e39)]}, 422, "expected finite numbers"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "status", "message"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_input_is_a_4xx_naming_the_problem(make_client, case, body, status, message):
    client = make_client()
    response = client.post("/v1/predict", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected(make_client, literal):
    client = make_client()
    row = "[" + ", ".join([literal] + ["1.0"] * 7) + "]"
    content = '{"instances": [[' + ", ".join([row] + ["[" + ", ".join(["1.0"] * 8) + "]"] * 7) + "]]}"
    response = client.post("/v1/predict", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "instances[0]" in response.json()["detail"]
    assert "expected finite numbers (no NaN or infinity)" in response.json()["detail"]


def test_body_over_the_limit_is_413(make_client):
    client = make_client(max_body_bytes=2000)
    response = client.post("/v1/predict", json={"instances": sample(8)})
    assert response.status_code == 413
    assert "expected at most 2000 bytes" in response.json()["detail"]
    assert client.post("/v1/predict", json={"instances": [[EIGHT] * 8]}).status_code == 200


def test_no_input_makes_it_answer_500(make_client):
    client = make_client()
    rng = np.random.default_rng(3)
    bodies = [
        b"", b"{", b"null", b"[]", b'"x"', b"123", b'{"instances": null}', b'{"instances": [null]}',
        b'{"instances": [[[]]]}', b'{"instances": [[[[1]]]]}', b'{"instances": "abc"}', b"\xff\xfe\x00",
        b'{"instances": [' + b"[" * 200 + b"]" * 200 + b"]}", b'{"instances": [1e400]}',
        json.dumps({"instances": [[[10**30] * 8] * 8]}).encode()
    ]  # fmt: skip
    bodies += [bytes(rng.integers(0, 256, size=int(rng.integers(1, 300)), dtype=np.uint8)) for _ in range(15)]
    for content in bodies:
        for path in ("/v1/predict", "/v1/feedback", "/v1/predict/image"):
            response = client.post(path, content=content, headers={"content-type": "application/json"})
            assert 400 <= response.status_code < 500, (path, content[:60], response.text)
            assert response.json()["detail"]
    for label in (None, "nope", 1.5, -1, 99, True, [1]):
        response = client.post("/v1/feedback", json={"request_id": "x", "label": label})
        assert 400 <= response.status_code < 500, (label, response.text)


def test_api_key_guards_predict_feedback_and_admin(make_client):
    key = "k3y-for-the-tests-0123"
    client = make_client(api_key=key)
    body = {"instances": [[EIGHT] * 8]}
    for path, payload in (("/v1/predict", body), ("/v1/feedback", {"request_id": "x", "label": 1})):
        response = client.post(path, json=payload)
        assert response.status_code == 401
        assert "X-API-Key" in response.json()["detail"]
    assert client.post("/v1/admin/reload").status_code == 401
    assert (
        client.post("/v1/predict", json=body, headers={"X-API-Key": "wrong-key-0123456"}).status_code == 401
    )
    assert client.post("/v1/predict", json=body, headers={"X-API-Key": key}).status_code == 200
    assert client.post("/v1/admin/reload", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/health").status_code == 200


def test_feedback_is_stored_with_its_prediction(make_client, tmp_path):
    from serving.store.reader import PredictionReader

    client = make_client()
    first = client.post("/v1/predict", json={"instances": sample(1)}).json()
    batch = client.post("/v1/predict", json={"instances": sample(2, seed=5)}).json()
    request_id = first["request_id"]
    response = client.post("/v1/feedback", json={"request_id": request_id, "label": 2})
    assert response.status_code == 200, response.text
    assert response.json() == {"request_id": request_id, "label": 2.0, "stored": True}
    named = batch["predictions"][1]["request_id"]
    assert client.post("/v1/feedback", json={"request_id": named, "label": "1"}).status_code == 200
    unknown = client.post("/v1/feedback", json={"request_id": "nope", "label": 1})
    assert unknown.status_code == 404
    assert "no such prediction" in unknown.json()["detail"]
    bad = client.post("/v1/feedback", json={"request_id": request_id, "label": 7})
    assert bad.status_code == 422
    assert "expected a class id 0..2 or a class name" in bad.json()["detail"]
    client.app.state.service.writer.flush()
    with PredictionReader(f"sqlite:///{tmp_path / 'var' / 'predictions.db'}") as reader:
        window = reader.window(10)
    assert list(window["request_id"]) == [request_id, f"{batch['request_id']}-0", named]
    assert window["label"].iloc[0] == 2.0 and window["label"].iloc[2] == 1.0
    assert np.isnan(window["label"].iloc[1])
    np.testing.assert_allclose(window["features"].iloc[0], np.asarray(sample(1)[0], dtype="float32"))
    assert list(window["predicted"]) == [p["class_id"] for p in first["predictions"] + batch["predictions"]]


def test_status_routes_and_model_info(make_client):
    client = make_client()
    assert client.get("/health").json()["status"] == "alive"
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["model_version"] == "1"
    info = client.get("/v1/model").json()
    assert info["name"] == "tiny-served" and info["version"] == "1" and info["run_id"] == "run-1"
    assert info["classes"] == ["0", "1", "2"] and info["input_shape"] == [8, 8]
    assert info["backend"] == "onnx"
    assert info["signature"]["inputs"]["shape"] == [-1, 8, 8]
    assert info["metrics"] == {"accuracy": 0.9}
    assert info["feature_range"]["origin"].startswith("standard scaling")
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_not_ready_until_the_registry_has_a_version(make_client, make_source):
    client = make_client(source=make_source(None))
    assert client.get("/health").status_code == 200
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "loading"
    response = client.post("/v1/predict", json={"instances": sample(1)})
    assert response.status_code == 503 and "not ready" in response.json()["detail"]


def test_metrics_count_requests_errors_batches_and_version(make_client):
    client = make_client()
    client.post("/v1/predict", json={"instances": sample(3)})
    client.post("/v1/predict", json={"instances": []})
    text = client.get("/metrics").text
    assert 'lifecycle_requests_total{endpoint="/v1/predict",status="200"} 1.0' in text
    assert 'lifecycle_errors_total{endpoint="/v1/predict",kind="input"} 1.0' in text
    assert "lifecycle_batch_size_sum 3.0" in text
    assert "lifecycle_model_version 1.0" in text
    assert 'lifecycle_model_info{backend="onnx",name="tiny-served",version="1"} 1.0' in text
    assert 'lifecycle_predictions_total{version="1"} 3.0' in text
    assert "lifecycle_request_latency_seconds_bucket" in text
    assert "lifecycle_model_calls_total 1.0" in text and "lifecycle_model_call_requests_total 1.0" in text
    client.app.state.service.writer.flush()
    text = client.get("/metrics").text
    assert (
        "lifecycle_store_rows_written_total 3.0" in text and "lifecycle_store_rows_failed_total 0.0" in text
    )


def test_metric_buckets_are_cumulative_with_the_bound_inclusive():
    from serving.metrics import ServiceMetrics

    metrics = ServiceMetrics()
    # 2 sits on a bound (le="2.0"); 600 is past the last one
    metrics.observe_predictions("/v1/predict", "4", [1, 2], [0.001, 0.001])
    metrics.observe_predictions("/v1/predict", "4", [2, 3, 600], [0.001, 0.001, 0.001])
    text = metrics.render().decode()
    assert 'lifecycle_batch_size_bucket{le="1.0"} 1.0' in text
    assert 'lifecycle_batch_size_bucket{le="2.0"} 3.0' in text
    assert 'lifecycle_batch_size_bucket{le="4.0"} 4.0' in text
    assert 'lifecycle_batch_size_bucket{le="512.0"} 4.0' in text
    assert 'lifecycle_batch_size_bucket{le="+Inf"} 5.0' in text
    assert "lifecycle_batch_size_count 5.0" in text and "lifecycle_batch_size_sum 608.0" in text
    assert 'lifecycle_request_latency_seconds_bucket{endpoint="/v1/predict",le="0.001"} 5.0' in text
    assert 'lifecycle_predictions_total{version="4"} 608.0' in text


def test_request_ids_are_unique_and_time_ordered():
    import time

    from serving.answers import new_request_ids

    first = [request_id for _ in range(1000) for request_id in new_request_ids(2)]
    time.sleep(0.002)
    (later,) = new_request_ids(1)
    assert len(set(first)) == len(first)
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in first)
    assert all(rid[:12] <= later[:12] for rid in first) and max(first) < later  # sorts by time
    assert abs(int(later[:12], 16) / 1000 - time.time()) < 5


def test_the_heap_is_frozen_once_the_model_is_loaded(make_client):
    import gc

    gc.unfreeze()
    make_client()  # started: loaded, warmed, then settle_heap()
    assert gc.get_freeze_count() > 10_000  # the model and its libraries: out of the collector's scans


def test_reload_swaps_to_the_alias_and_back(make_client, make_source):
    source = make_source()
    client = make_client(source=source)
    instances = {"instances": sample(2, seed=9)}
    before = client.post("/v1/predict", json=instances).json()
    assert client.post("/v1/admin/reload").json() == {"changed": False, "model_version": "1", "error": None}
    source.version = "2"
    assert client.post("/v1/admin/reload").json()["changed"] is True
    after = client.post("/v1/predict", json=instances)
    assert after.headers["X-Model-Version"] == after.json()["model_version"] == "2"
    assert after.json()["predictions"][0]["probabilities"] != before["predictions"][0]["probabilities"]
    source.version = "1"  # rollback: the alias moves back
    assert client.post("/v1/admin/reload").json()["model_version"] == "1"
    again = client.post("/v1/predict", json=instances).json()
    assert again["predictions"][0]["probabilities"] == before["predictions"][0]["probabilities"]


def test_a_broken_new_version_keeps_the_old_one_serving(make_client, make_source, local_models, tmp_path):
    from dataclasses import replace

    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a keras file")
    models = {**local_models, "3": replace(local_models["2"], version="3", model_path=broken)}
    source = make_source(models=models)
    client = make_client(source=source)
    source.version = "3"
    result = client.post("/v1/admin/reload").json()
    assert result["changed"] is False and result["model_version"] == "1"
    assert "does not hash to the registry's" in result["error"]
    assert client.post("/v1/predict", json={"instances": sample(1)}).headers["X-Model-Version"] == "1"
    assert client.get("/ready").json()["error"] == result["error"]


def test_admin_answers_loopback_only_without_a_key(make_client):
    from fastapi.testclient import TestClient

    client = make_client()
    remote = TestClient(client.app, client=("10.1.2.3", 5))
    response = remote.post("/v1/admin/reload")
    assert response.status_code == 403 and "loopback clients only" in response.json()["detail"]


def test_keras_backend_answers_like_onnx(make_client):
    instances = {"instances": sample(3, seed=4)}
    onnx = make_client().post("/v1/predict", json=instances).json()
    keras_client = make_client(backend="keras")
    assert keras_client.get("/v1/model").json()["backend"] == "keras"
    served = keras_client.post("/v1/predict", json=instances).json()
    np.testing.assert_allclose(
        [p["probabilities"] for p in served["predictions"]],
        [p["probabilities"] for p in onnx["predictions"]],
        atol=1e-5,
    )
