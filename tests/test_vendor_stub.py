"""The benchmark's vendor stub speaks the Clipdrop, Stability AI and OpenAI shapes the real clients expect."""

from __future__ import annotations

import json

import pytest
import requests
from openai import OpenAI

from tests.conftest import png_size


def test_clipdrop_answers_a_1024_png_with_credit_headers(stub):
    response = requests.post(f"{stub.url}/text-to-image/v1", headers={"x-api-key": "bench"},
                             files={"prompt": (None, "a shop", "text/plain")}, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-remaining-credits"] == "99"
    assert png_size(response.content) == (1024, 1024)
    assert 800_000 < len(response.content) < 1_500_000  # about 1 MB, like a generated photo


def test_clipdrop_refuses_a_request_without_key_or_prompt(stub):
    no_key = requests.post(f"{stub.url}/text-to-image/v1", files={"prompt": (None, "a shop")}, timeout=30)
    assert no_key.status_code == 401 and no_key.json() == {"error": "No api key provided"}
    urlencoded = requests.post(f"{stub.url}/text-to-image/v1", headers={"x-api-key": "bench"},
                               data={"prompt": "a shop"}, timeout=30)
    assert urlencoded.status_code == 400 and "error" in urlencoded.json()


@pytest.mark.parametrize(("aspect_ratio", "size"), [("1:1", (1024, 1024)), ("21:9", (1536, 640))])
def test_stability_answers_raw_png_with_finish_reason(stub, aspect_ratio, size):
    response = requests.post(
        f"{stub.url}/v2beta/stable-image/generate/core",
        headers={"Authorization": "Bearer bench", "accept": "image/*"},
        files={"none": ""},
        data={"prompt": "a badge", "negative_prompt": "text", "aspect_ratio": aspect_ratio, "output_format": "png"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["finish-reason"] == "SUCCESS"
    assert response.headers["seed"].isdigit()
    assert png_size(response.content) == size


def test_stability_refuses_a_missing_key_with_its_error_shape(stub):
    response = requests.post(f"{stub.url}/v2beta/stable-image/generate/sd3", files={"none": ""},
                             data={"prompt": "a badge"}, timeout=30)
    assert response.status_code == 401
    assert set(response.json()) == {"id", "name", "errors"}


def test_openai_sdk_gets_a_chat_completion_with_the_achievement_fields(stub):
    with OpenAI(api_key="bench", base_url=f"{stub.url}/v1", max_retries=0, timeout=30) as client:
        completion = client.chat.completions.create(
            model="gpt-5-mini",
            messages=[{"role": "user", "content": "Write an achievement as JSON."}],
            response_format={"type": "json_object"},
        )
    content = json.loads(completion.choices[0].message.content)
    assert set(content) == {"name", "description", "occasion", "product_type"}
    assert all(isinstance(value, str) and value for value in content.values())
    assert stub.calls["openai"] >= 1
