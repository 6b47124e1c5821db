"""The OpenAI writer against a stub OpenAI-compatible server on 127.0.0.1: requests, odd replies and faults."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import assert_nothing_saved, count_rows, generate_achievement
from fakes import OPENAI_KEY, png_text
from models import Achievement

GOOD = {"name": "Spooky Soju Sipper", "description": "You toasted Halloween with soju! Share this badge.",
        "occasion": "Halloween", "product_type": "soju"}


@dataclass
class Reply:
    status: int = 200
    body: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False


def chat(content: str | None, finish_reason: str = "stop", refusal: str | None = None) -> Reply:
    message = {"role": "assistant", "content": content, "refusal": refusal}
    return Reply(body={"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "stub",
                       "choices": [{"index": 0, "finish_reason": finish_reason, "message": message}]})


def error(status: int, message: str = "failed", code: str | None = None, **headers: str) -> Reply:
    return Reply(status, {"error": {"message": message, "type": "error", "code": code}},
                 {key.replace("_", "-"): value for key, value in headers.items()})


class StubServer:
    """An OpenAI-compatible server answering queued replies in order; the last one repeats."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {name.lower(): value for name, value in self.headers.items()}
                stub.requests.append({"path": self.path, "headers": headers, "json": json.loads(body)})
                reply = stub.replies.pop(0) if len(stub.replies) > 1 else stub.replies[0]
                time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    return
                data = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # the client gave up on a slow reply: expected in the timeout tests

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, *replies: Reply) -> None:
        self.replies.extend(replies)


@pytest.fixture
def stub():
    with StubServer() as server:
        yield server


@pytest.fixture
def make_client(make_app, stub):
    def build(**overrides):
        config = {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": stub.base_url, "OPENAI_MODEL": "llama3.2",
                  "PROVIDER_RETRIES": "2", **overrides}
        return make_app(**config).test_client()

    return build


@pytest.fixture
def client(make_client):
    return make_client()


def test_achievement_from_openai(client, stub):
    stub.answer(chat(json.dumps(GOOD)))
    response = generate_achievement(client)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["achievement_name"] == "Spooky Soju Sipper"
    assert (body["occasion"], body["product_type"]) == ("Halloween", "soju")
    assert body["description"] == GOOD["description"]

    [sent] = stub.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert sent["json"]["model"] == "llama3.2"
    response_format = sent["json"]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"]["required"] == ["name", "description", "occasion", "product_type"]
    prompt = " ".join(message["content"] for message in sent["json"]["messages"])
    assert '"soju"' in prompt and "31 October" in prompt and "Halloween" in prompt and "JSON" in prompt

    badge = client.get(body["image_url"]).data
    assert "Spooky Soju Sipper" in png_text(badge)["prompt"]
    assert count_rows(client.application, Achievement) == 1


def test_server_without_json_schema_gets_json_mode(client, stub):
    stub.answer(error(400, "response_format json_schema is not supported"), chat(json.dumps(GOOD)))
    response = generate_achievement(client)
    assert response.status_code == 200, response.get_json()
    assert [r["json"]["response_format"]["type"] for r in stub.requests] == ["json_schema", "json_object"]


@pytest.mark.parametrize(
    "content",
    [
        "```json\n" + json.dumps(GOOD, indent=2) + "\n```",
        "Here is your achievement:\n```\n" + json.dumps(GOOD) + "\n```\nEnjoy!",
        str(GOOD),  # a Python dict: single quotes
        json.dumps({"Name of the Achievement": GOOD["name"], "Description": GOOD["description"],
                    "OCCASION": GOOD["occasion"], "Product Type": GOOD["product_type"]}),
        json.dumps({"achievementName": GOOD["name"], "achievement_description": GOOD["description"],
                    "celebration": GOOD["occasion"], "productType": GOOD["product_type"]}),
        json.dumps({"achievement": GOOD}),
        "Sure! " + json.dumps(GOOD) + " Hope you like it.",
        json.dumps([GOOD]),
    ],
    ids=["fenced-json", "fenced-with-prose", "python-dict", "title-case-keys", "camel-case-keys", "nested",
         "prose-around", "list"],
)
def test_odd_reply_shapes_are_read(client, stub, content):
    stub.answer(chat(content))
    response = generate_achievement(client)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["achievement_name"], body["occasion"], body["product_type"]) == (
        GOOD["name"], GOOD["occasion"], GOOD["product_type"])
    assert len(stub.requests) == 1


def test_unusable_reply_is_asked_again(client, stub):
    stub.answer(chat("I think a good name would be Soju Star."), chat(json.dumps(GOOD)))
    response = generate_achievement(client)
    assert response.status_code == 200
    assert len(stub.requests) == 2


@pytest.mark.parametrize(
    "content",
    ["no JSON here", json.dumps({"name": "Only A Name"}), json.dumps({**GOOD, "name": "x" * 101}), "", None,
     json.dumps(["a", "b"]), "{'name': broken"],
    ids=["prose", "missing-fields", "name-too-long", "empty", "null", "list-of-strings", "broken-dict"],
)
def test_reply_unusable_after_the_retries_is_a_provider_error(client, stub, content):
    stub.answer(chat(content))
    response = generate_achievement(client)
    assert response.status_code == 502
    body = response.get_json()
    assert (body["code"], body["provider"]) == ("provider_error", "openai")
    assert len(stub.requests) == 3  # the first ask and PROVIDER_RETRIES=2 more
    assert_nothing_saved(client.application)


@pytest.mark.parametrize("body", [{"choices": [{}]}, {}, {"choices": None},
                                  {"choices": [{"message": {"content": ["a list"]}}]}],
                         ids=["no-message", "no-choices", "null-choices", "content-not-text"])
def test_malformed_completion_is_a_provider_error(make_client, stub, body):
    client = make_client(PROVIDER_RETRIES="1")
    stub.answer(Reply(body=body))
    response = generate_achievement(client)
    assert response.status_code == 502
    assert (response.get_json()["code"], response.get_json()["provider"]) == ("provider_error", "openai")
    assert len(stub.requests) == 2
    assert_nothing_saved(client.application)


def test_429_then_200_is_retried_by_the_sdk(client, stub):
    stub.answer(error(429, "slow down", retry_after_ms="1"), chat(json.dumps(GOOD)))
    assert generate_achievement(client).status_code == 200
    assert [r["headers"].get("x-stainless-retry-count") for r in stub.requests] == ["0", "1"]


def test_still_rate_limited_is_503_with_retry_after(client, stub):
    stub.answer(error(429, "slow down", retry_after_ms="1", retry_after="7"))
    response = generate_achievement(client)
    assert response.status_code == 503
    assert (response.get_json()["code"], response.get_json()["provider"]) == ("provider_busy", "openai")
    assert response.headers["Retry-After"] == "7"
    assert len(stub.requests) == 3
    assert_nothing_saved(client.application)


def test_out_of_quota_is_a_provider_error(client, stub):
    stub.answer(error(429, "You exceeded your current quota", code="insufficient_quota", retry_after_ms="1"))
    response = generate_achievement(client)
    assert response.status_code == 502
    assert "quota" in response.get_json()["error"]


def test_5xx_until_retries_run_out_never_falls_back_to_the_local_writer(client, stub):
    stub.answer(error(500, "boom", retry_after_ms="1"))
    response = generate_achievement(client)
    assert response.status_code == 502
    assert (response.get_json()["code"], response.get_json()["provider"]) == ("provider_error", "openai")
    assert len(stub.requests) == 3
    assert_nothing_saved(client.application)


def test_timeout(make_client, stub):
    client = make_client(PROVIDER_TIMEOUT_S="0.2", PROVIDER_RETRIES="1")
    stub.answer(Reply(body={}, delay=0.6))
    response = generate_achievement(client)
    assert response.status_code == 502
    assert "did not answer in time" in response.get_json()["error"]
    assert len(stub.requests) == 2
    assert_nothing_saved(client.application)


def test_dropped_connection(make_client, stub):
    client = make_client(PROVIDER_RETRIES="1")
    stub.answer(Reply(drop=True))
    response = generate_achievement(client)
    assert response.status_code == 502
    assert "connection" in response.get_json()["error"]
    assert len(stub.requests) == 2
    assert_nothing_saved(client.application)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_is_a_provider_error_without_the_key(client, stub, caplog, status):
    stub.answer(error(status, f"Incorrect API key provided: {OPENAI_KEY}"))
    with caplog.at_level(logging.DEBUG):
        response = generate_achievement(client)
    assert response.status_code == 502
    assert "OPENAI_API_KEY" in response.get_json()["error"]
    assert len(stub.requests) == 1
    assert OPENAI_KEY not in response.get_data(as_text=True)
    assert OPENAI_KEY not in caplog.text


@pytest.mark.parametrize("reply", [chat(None, finish_reason="content_filter"), chat(None, refusal="I can't help."),
                                   error(400, "flagged", code="content_policy_violation")],
                         ids=["finish-reason", "refusal", "policy-400"])
def test_refusal_is_a_rejected_prompt(client, stub, reply):
    stub.answer(reply)
    response = generate_achievement(client)
    assert response.status_code == 422
    assert (response.get_json()["code"], response.get_json()["provider"]) == ("content_rejected", "openai")
    assert len(stub.requests) == 1
    assert_nothing_saved(client.application)


def test_the_server_warms_the_openai_client_it_will_use(stub):
    """gunicorn.conf.py warms the text provider before forking: with OpenAI configured, that builds the very client
    (the ledger's transport included) that the first achievement then uses, and runs one completion through the SDK
    without calling anyone."""
    import achievement_gen
    import providers
    from core.settings import Settings

    settings = Settings(openai_api_key=OPENAI_KEY, openai_base_url=stub.base_url, text_provider="openai")
    providers.warm_up(settings)
    assert stub.requests == []  # its rehearsal of a completion is answered in memory: no call, nothing to pay
    assert achievement_gen.client_for(settings) is achievement_gen.client_for(settings)
    assert achievement_gen.client_for(settings).base_url == stub.base_url.rstrip("/") + "/"


def test_first_requests_that_come_together_share_one_client_and_a_dropped_client_is_closed(stub):
    """A second client built by a concurrent first request was dropped with its pooled connections open."""
    import achievement_gen
    from core.settings import Settings

    settings = Settings(openai_api_key=OPENAI_KEY, openai_base_url=stub.base_url, openai_model="together")
    start, clients = threading.Barrier(8), []

    def first_request():
        start.wait()
        clients.append(achievement_gen.client_for(settings))

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(client) for client in clients}) == 1
    for n in range(achievement_gen.MAX_CLIENTS):  # as many other configurations: the least recently used goes
        other = Settings(openai_api_key=OPENAI_KEY, openai_base_url=stub.base_url, openai_model=f"model {n}")
        achievement_gen.client_for(other)
    assert clients[0].is_closed()
