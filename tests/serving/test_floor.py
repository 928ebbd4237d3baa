"""bench/floor.py validates with the service's own code: the same answers to the same bad inputs."""

from __future__ import annotations

from fastapi.testclient import TestClient

from bench.floor import create_floor_app, floor_app_from_environment


def test_the_floor_rejects_what_the_service_rejects(monkeypatch):
    monkeypatch.setenv("FLOOR_INPUT_SHAPE", "2,2")
    monkeypatch.setenv("FLOOR_RANGE", "0,16,1.6")
    client = TestClient(floor_app_from_environment())
    good = [[0.0, 16.0], [17.5, 3.0]]  # 17.5: within the tolerance
    assert client.post("/v1/predict", json={"instances": [good]}).status_code == 200
    out_of_range = client.post("/v1/predict", json={"instances": [good, [[0.0, 18.0], [1.0, 1.0]]]})
    assert out_of_range.status_code == 422
    assert "instances[1]: value 18 at [0, 1] is outside the trained range [-1.6, 17.6]" in out_of_range.text
    wrong_shape = client.post("/v1/predict", json={"instances": [[1.0, 2.0]]})
    assert wrong_shape.status_code == 422 and "expected each instance of shape [2, 2]" in wrong_shape.text


def test_the_floor_has_the_services_body_limit():
    client = TestClient(create_floor_app([2], feature_range=None, max_body_bytes=64))
    big = client.post("/v1/predict", json={"instances": [[1.0, 2.0]] * 20})
    assert big.status_code == 413 and "expected at most 64 bytes" in big.text
    nan = client.post(
        "/v1/predict", content=b'{"instances": [[1.0, NaN]]}', headers={"content-type": "application/json"}
    )
    assert nan.status_code == 422 and "expected finite numbers" in nan.text
