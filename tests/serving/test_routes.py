"""Routes through FastAPI's TestClient on real Keras models (loaded from local .keras files)."""

from __future__ import annotations

import numpy as np


def sample(n: int = 1, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 16, size=(n, 8, 8)).round(3).tolist()


def test_predict_answers_per_instance_with_version_header(make_client, local_models):
    client = make_client()
    response = client.post("/v1/predict", json={"instances": sample(3)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["X-Model-Version"] == body["model_version"] == "1"
    assert body["model_name"] == "tiny-served"
    assert len(body["predictions"]) == 3
    for item in body["predictions"]:
        assert item["label"] == str(item["class_id"])
        assert abs(sum(item["probabilities"]) - 1) < 1e-5
        assert item["confidence"] == max(item["probabilities"])
        assert item["request_id"].startswith(body["request_id"])
