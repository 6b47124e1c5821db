"""Generation as jobs on the in-process runner: Prefer, the job routes, Server-Sent Events, cancel, idempotency keys,
and a job that runs twice saving once. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bench import vendor_stub
from conftest import count_rows, image_files, post_together, wait_for_job
from core.provider_types import GeneratedImage
from fakes import CLIPDROP_KEY, CLIPDROP_URL
from jobs.state import claim, save_once
from models import Achievement, Job, JobOutput, Storefront, utcnow

ADMIN = "jobs-admin-token"


@pytest.fixture
def slow(stub):
    """Settings that send images to the stub, with its latency set to `seconds` and its counts reset."""

    def configure(seconds: float = 0.5, **overrides) -> dict:
        stub.latency_s = seconds
        stub.calls.clear()
        return {"IMAGE_PROVIDER": "clipdrop", "CLIPDROP_API_KEY": CLIPDROP_KEY, "CLIPDROP_API_URL": stub.url,
                "PROVIDER_RETRIES": "0", **overrides}

    return configure


def seed(client) -> list[dict]:
    return client.post("/seed-specific", headers={"Authorization": f"Bearer {ADMIN}"}).get_json()["users"]


def parse_blocks(text: str) -> list[dict[str, str]]:
    """The blocks of an SSE stream, each as its fields; a comment as {":": text}."""
    return [{":": block[1:].strip()} if block.startswith(":") else dict(line.split(": ", 1)
            for line in block.splitlines()) for block in filter(None, text.split("\n\n"))]


def parse_events(text: str) -> list[tuple[str, object]]:
    """The events of an SSE stream, as (name, data); comments as (":", text); `retry:` blocks left out."""
    return [(":", block[":"]) if ":" in block else (block["event"], json.loads(block["data"]))
            for block in parse_blocks(text) if "retry" not in block]


# --- Prefer ---------------------------------------------------------------------------------------


def test_without_prefer_the_request_waits_and_answers_as_before_with_the_job_id(client, users):
    response = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech")
    assert response.status_code == 200
    body = response.get_json()
    assert {"user name", "recommendations", "storefronts", "job_id"} <= set(body)
    assert "Idempotent-Replayed" not in response.headers

    job = client.get(f"/jobs/{body['job_id']}").get_json()
    assert job["status"] == "succeeded"
    assert job["kind"] == "storefronts"
    assert job["params"] == {"user_id": users[0]["id"], "shop_theme": "tech"}
    assert job["progress"] == {"done": 1, "total": 1}
    assert job["result"] == body
    assert job["http_status"] == 200
    assert job["error"] is None
    assert job["started_at"] and job["finished_at"]
    assert job["urls"] == {"get": f"/jobs/{job['id']}", "events": f"/jobs/{job['id']}/events",
                           "cancel": f"/jobs/{job['id']}"}


def test_respond_async_answers_202_then_the_job_holds_the_answer(app, client, users):
    response = client.post("/gen-achievement-image?date=31 Oct&product=soju", headers={"Prefer": "respond-async"})
    assert response.status_code == 202
    job = response.get_json()
    assert response.headers["Location"] == f"/jobs/{job['id']}"
    assert response.headers["Preference-Applied"] == "respond-async"
    assert job["status"] in {"queued", "running"}
    assert job["kind"] == "achievement"
    assert job["params"]["product"] == "soju"
    assert job["result"] is None

    ended = wait_for_job(client, job["id"])
    assert ended["status"] == "succeeded"
    assert ended["http_status"] == 200
    assert ended["result"]["achievement_name"] == ended["result"]["name"]
    assert ended["result"]["job_id"] == job["id"]
    assert count_rows(app, Achievement) == 1
    assert len(image_files(app)) == 1


def test_wait_answers_the_result_when_it_comes_in_time(client, users):
    response = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=food",
                           headers={"Prefer": "wait=30"})
    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "wait=30"
    assert response.get_json()["storefronts"][0]["style"] == "food"


def test_preferences_the_service_cannot_honour_are_ignored(client, users):
    for prefer in ("wait=0", "wait=soon", "handling=lenient", "wait="):
        response = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech",
                               headers={"Prefer": prefer})
        assert response.status_code == 200, prefer
        assert "Preference-Applied" not in response.headers
        assert response.get_json()["storefronts"][0]["style"] == "tech"


def test_wait_answers_202_when_the_job_is_slower(make_app, slow):
    client = make_app(**slow(1.5)).test_client()
    users = seed(client)
    response = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech",
                           headers={"Prefer": "respond-async, wait=1"})
    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "respond-async, wait=1"
    assert response.headers["Location"] == f"/jobs/{response.get_json()['id']}"
    assert wait_for_job(client, response.get_json()["id"])["status"] == "succeeded"


@pytest.fixture
def failing_app(make_app, http):
    http.post(CLIPDROP_URL, status=500, json={"error": "down"})
    return make_app(IMAGE_PROVIDER="clipdrop", CLIPDROP_API_KEY=CLIPDROP_KEY, PROVIDER_RETRIES="0")


def test_a_failed_job_answers_its_error_and_saves_nothing(failing_app):
    client = failing_app.test_client()
    users = seed(client)
    response = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech")
    assert response.status_code == 502
    body = response.get_json()
    assert body["code"] == "provider_error"
    assert body["provider"] == "clipdrop"
    job = client.get(f"/jobs/{body['job_id']}").get_json()
    assert job["status"] == "failed"
    assert job["http_status"] == 502
    assert job["error"] == {key: value for key, value in body.items() if key != "job_id"}
    assert job["result"] is None
    assert job["progress"] == {"done": 1, "total": 1}
    assert count_rows(failing_app, Storefront) == 0
    assert image_files(failing_app) == set()


def test_requests_refused_before_a_job_make_none(app, client, users):
    assert client.post("/gen-new-storefront-images?user_id=999&shop_theme=tech").status_code == 404
    assert client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=toys").status_code == 404
    assert client.post("/gen-achievement-image?date=31 Feb&product=soju").status_code == 400
    assert count_rows(app, Job) == 0


# --- the job routes -------------------------------------------------------------------------------


def test_an_unknown_job_is_404_on_every_route(client):
    for job_id in ("0b7c3f0e-8d1e-4f57-9a57-2f0c1d2b3a4e", "nope", "x" * 300):
        for method, path in (("get", ""), ("delete", ""), ("get", "/events")):
            response = getattr(client, method)(f"/jobs/{job_id}{path}")
            assert response.status_code == 404, (method, path)
            assert response.get_json()["code"] == "job_not_found"


def test_events_stream_progress_per_theme_then_the_final_status(make_app, slow):
    client = make_app(**slow(0.3)).test_client()
    users = seed(client)
    job = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=all",
                      headers={"Prefer": "respond-async"}).get_json()
    assert job["progress"] == {"done": 0, "total": 3}
    response = client.get(f"/jobs/{job['id']}/events")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    events = parse_events(response.get_data(as_text=True))
    assert events[0][0] == "status"
    assert events[-1][0] == "status"
    assert events[-1][1]["status"] == "succeeded"
    assert events[-1][1]["result"]["job_id"] == job["id"]
    progress = [data for name, data in events if name == "progress"]
    done_at_start = events[0][1]["progress"]["done"]
    assert [item["done"] for item in progress] == list(range(done_at_start + 1, 4))
    assert len({item["theme"] for item in progress}) == len(progress)
    assert {item["theme"] for item in progress} <= {"tech", "food", "fashion"}
    assert all(item["total"] == 3 for item in progress)
    statuses = [data["status"] for name, data in events if name == "status"]
    assert statuses == sorted(set(statuses), key=["queued", "running", "succeeded"].index)


def test_events_of_an_ended_job_are_one_status_event(client, users):
    body = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech").get_json()
    events = parse_events(client.get(f"/jobs/{body['job_id']}/events").get_data(as_text=True))
    assert [name for name, _data in events] == ["status"]
    assert events[0][1]["status"] == "succeeded"
    assert events[0][1]["result"] == body


def test_cancel_a_queued_job_and_no_provider_is_called_for_it(make_app, slow, stub):
    app = make_app(**slow(1.0), JOB_WORKERS="1")
    client = app.test_client()
    users = seed(client)
    url = f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech"
    first = client.post(url, headers={"Prefer": "respond-async"}).get_json()
    wait_for_job(client, first["id"], "running")
    second = client.post(url.replace("tech", "food"), headers={"Prefer": "respond-async"}).get_json()
    assert client.get(f"/jobs/{second['id']}").get_json()["status"] == "queued"  # the one worker is busy

    canceled = client.delete(f"/jobs/{second['id']}")
    assert canceled.status_code == 200
    assert canceled.get_json()["status"] == "canceled"
    assert canceled.get_json()["finished_at"]
    running = client.delete(f"/jobs/{first['id']}")
    assert running.status_code == 409
    assert running.get_json()["code"] == "job_running"

    assert wait_for_job(client, first["id"])["status"] == "succeeded"
    app.extensions["jobs"].shutdown()  # every job this process was given has run (or been refused)
    assert client.get(f"/jobs/{second['id']}").get_json()["status"] == "canceled"
    assert stub.calls["clipdrop"] == 1
    assert count_rows(app, Storefront) == 1
    again = client.delete(f"/jobs/{second['id']}")
    assert again.status_code == 409
    assert again.get_json()["code"] == "job_finished"


def test_list_jobs_is_for_the_admin_newest_first(make_app):
    client = make_app(ADMIN_TOKEN=ADMIN).test_client()
    users = seed(client)
    made = [client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme={theme}").get_json()
            for theme in ("tech", "food")]
    assert client.get("/jobs").status_code == 401
    admin = {"Authorization": f"Bearer {ADMIN}"}
    listed = client.get("/jobs", headers=admin).get_json()["jobs"]
    assert [job["id"] for job in listed] == [made[1]["job_id"], made[0]["job_id"]]
    assert [job["id"] for job in client.get("/jobs?limit=1", headers=admin).get_json()["jobs"]] == [made[1]["job_id"]]
    assert client.get("/jobs?status=succeeded", headers=admin).get_json()["jobs"] == listed
    assert client.get("/jobs?status=queued", headers=admin).get_json()["jobs"] == []
    for query, field in (("status=done", "status"), ("limit=0", "limit"), ("limit=x", "limit")):
        response = client.get(f"/jobs?{query}", headers=admin)
        assert response.status_code == 400
        assert response.get_json()["field"] == field


# --- idempotency keys -----------------------------------------------------------------------------


def test_a_repeated_key_replays_the_first_answer_without_generating_again(app, client, users):
    url = f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech"
    first = client.post(url, headers={"Idempotency-Key": "order-1"})
    again = client.post(url, headers={"Idempotency-Key": "order-1", "Prefer": "respond-async"})
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert count_rows(app, Job) == 1
    assert count_rows(app, Storefront) == 1

    other_route = client.post("/gen-achievement-image?date=31 Oct&product=soju", headers={"Idempotency-Key": "order-1"})
    assert other_route.status_code == 200  # a key belongs to its route
    assert count_rows(app, Job) == 2


def test_a_replayed_failure_is_the_same_failure(failing_app, http):
    client = failing_app.test_client()
    users = seed(client)
    url = f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech"
    first = client.post(url, headers={"Idempotency-Key": "k"})
    again = client.post(url, headers={"Idempotency-Key": "k"})
    assert first.status_code == again.status_code == 502
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(http.calls) == 1


def test_a_key_with_other_parameters_is_422(client, users):
    headers = {"Idempotency-Key": "order-2"}
    assert client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech",
                       headers=headers).status_code == 200
    response = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=food", headers=headers)
    assert response.status_code == 422
    assert response.get_json()["code"] == "idempotency_key_reused"


def test_a_malformed_key_is_400(app, client, users):
    for key in ("", "has space", "x" * 256, "caf\u00e9", "tab\there"):
        response = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech",
                               headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")})
        assert response.status_code == 400, key
        assert response.get_json() == {"error": response.get_json()["error"], "code": "invalid_parameter",
                                       "field": "Idempotency-Key"}
    assert count_rows(app, Job) == 0


def test_a_key_of_255_visible_characters_is_accepted(client, users):
    key = "!~" + "k" * 253
    response = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech",
                           headers={"Idempotency-Key": key})
    assert response.status_code == 200


def test_a_refused_request_does_not_remember_its_key(client, users):
    headers = {"Idempotency-Key": "order-3"}
    assert client.post("/gen-new-storefront-images?user_id=999&shop_theme=tech", headers=headers).status_code == 404
    response = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech", headers=headers)
    assert response.status_code == 200


def test_an_expired_key_makes_a_new_job(app, client, users):
    url = f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech"
    first = client.post(url, headers={"Idempotency-Key": "order-4"}).get_json()
    with app.extensions["sessionmaker"]() as session:
        session.execute(update(Job).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    second = client.post(url, headers={"Idempotency-Key": "order-4"})
    assert second.status_code == 200
    assert "Idempotent-Replayed" not in second.headers
    assert second.get_json()["job_id"] != first["job_id"]
    assert count_rows(app, Storefront) == 2


def test_the_sweeper_purges_jobs_ended_before_the_retention_with_their_keys(make_app):
    app = make_app(JOB_RETENTION_DAYS="2")
    client = app.test_client()
    users = seed(client)
    url = f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech"
    old, recent = (client.post(url, headers={"Idempotency-Key": key}).get_json()["job_id"] for key in ("o-1", "o-2"))
    unfinished = client.post(url, headers={"Prefer": "respond-async", "Idempotency-Key": "o-3"}).get_json()["id"]
    wait_for_job(client, unfinished)
    with app.extensions["sessionmaker"]() as session:
        days_ago = {old: 3, recent: 1, unfinished: 3}
        for job_id, days in days_ago.items():
            session.execute(update(Job).where(Job.id == job_id).values(finished_at=utcnow() - timedelta(days=days)))
        session.execute(update(Job).where(Job.id == unfinished).values(status="running", finished_at=None,
                                                                        heartbeat_at=utcnow()))
        session.commit()
    app.extensions["jobs"].sweep()
    assert client.get(f"/jobs/{old}").status_code == 404
    assert client.get(f"/jobs/{recent}").status_code == 200
    assert client.get(f"/jobs/{unfinished}").status_code == 200  # only finished jobs go
    assert count_rows(app, Storefront) == 3  # what the purged job saved stays
    again = client.post(url, headers={"Idempotency-Key": "o-1"})  # its key is forgotten with it: a new job
    assert "Idempotent-Replayed" not in again.headers and again.get_json()["job_id"] != old
    assert client.post(url, headers={"Idempotency-Key": "o-2"}).headers["Idempotent-Replayed"] == "true"


def test_a_repeat_while_the_first_runs_attaches_to_its_job(make_app, slow, stub):
    client = make_app(**slow(1.0)).test_client()
    users = seed(client)
    url = f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech"
    first = client.post(url, headers={"Idempotency-Key": "k", "Prefer": "respond-async"}).get_json()
    attached = client.post(url, headers={"Idempotency-Key": "k", "Prefer": "respond-async"})
    assert attached.status_code == 202
    assert attached.get_json()["id"] == first["id"]
    waited = client.post(url, headers={"Idempotency-Key": "k"})
    assert waited.status_code == 200
    assert waited.get_json()["job_id"] == first["id"]
    assert stub.calls["clipdrop"] == 1


def test_two_concurrent_requests_with_one_key_make_one_provider_call(make_app, slow, stub):
    app = make_app(**slow(0.5))
    users = seed(app.test_client())
    url = f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech"
    answers = post_together(app, url, {"Idempotency-Key": "same"})
    assert [answer.status_code for answer in answers] == [200, 200]
    assert answers[0].get_json() == answers[1].get_json()
    assert stub.calls["clipdrop"] == 1
    assert count_rows(app, Job) == 1
    assert count_rows(app, Storefront) == 1


# --- running twice, saving once ---------------------------------------------------------------------


def test_a_job_whose_runner_went_silent_runs_again_and_saves_once(app, client, users):
    body = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=all").get_json()
    with app.extensions["sessionmaker"]() as session:  # as if its runner died after saving one theme
        session.execute(update(Job).values(status="running", attempts=1, finished_at=None, result=None,
                                           heartbeat_at=utcnow() - timedelta(days=1)))
        food = session.scalar(select(JobOutput).where(JobOutput.slot == "food"))
        session.delete(session.get(Storefront, food.storefront_id))
        session.commit()
    assert count_rows(app, Storefront) == 2

    app.extensions["jobs"].sweep()
    job = wait_for_job(client, body["job_id"])
    assert job["status"] == "succeeded"
    assert [item["style"] for item in job["result"]["storefronts"]] == ["tech", "food", "fashion"]
    assert count_rows(app, Storefront) == 3  # only the lost theme was made again
    with app.extensions["sessionmaker"]() as session:
        assert session.get(Job, body["job_id"]).attempts == 2


def test_a_job_silent_after_its_second_run_fails(app, client, users):
    body = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech").get_json()
    with app.extensions["sessionmaker"]() as session:
        session.execute(update(Job).values(status="running", attempts=2, finished_at=None,
                                           heartbeat_at=utcnow() - timedelta(days=1)))
        session.commit()
    app.extensions["jobs"].sweep()
    job = client.get(f"/jobs/{body['job_id']}").get_json()
    assert job["status"] == "failed"
    assert job["http_status"] == 500
    assert job["error"]["code"] == "internal_error"


def test_a_second_save_of_a_slot_is_refused_and_leaves_no_file(app, client, users):
    body = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech").get_json()
    before = image_files(app)
    other = GeneratedImage(vendor_stub.noisy_png(64, 64), 64, 64, "local")
    row = Storefront(user_id=users[0]["id"], name="x", description="x", style="tech")
    with app.app_context():
        save_once(app, body["job_id"], "tech", row, other)
    assert count_rows(app, Storefront) == 1
    assert image_files(app) == before


def test_a_claim_is_taken_once(app, client, users):
    job_id = str(uuid.uuid4())
    with app.extensions["sessionmaker"]() as session:
        session.add(Job(id=job_id, kind="storefronts", status="queued", route="/x", fingerprint="f", attempts=0,
                        params={"user_id": users[0]["id"], "shop_theme": "tech"},
                        progress={"done": 0, "total": 1, "themes": []}))
        session.commit()
    assert claim(app, job_id) == 1
    assert claim(app, job_id) is None  # running, with a fresh heartbeat


# --- operations -----------------------------------------------------------------------------------


def test_the_job_id_is_in_the_request_s_and_the_provider_calls_log_lines(make_app, http, caplog):
    http.post(CLIPDROP_URL, status=500, json={"error": "down"})
    app = make_app(IMAGE_PROVIDER="clipdrop", CLIPDROP_API_KEY=CLIPDROP_KEY, PROVIDER_RETRIES="1")
    client = app.test_client()
    users = seed(client)
    caplog.set_level(logging.INFO)
    job_id = client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech").get_json()["job_id"]
    retries = [record.getMessage() for record in caplog.records if record.name == "core.http_client"]
    assert retries
    assert all(f"job_id={job_id}" in line for line in retries)
    [request_line] = [record.getMessage() for record in caplog.records
                      if record.name == "futurepast.requests" and "/gen-new-storefront-images" in record.getMessage()]
    assert f"job_id={job_id}" in request_line


def test_metrics_count_jobs(client, users):
    client.post(f"/gen-new-storefront-images?user_id={users[0]['id']}&shop_theme=tech")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'jobs_total{kind="storefronts",status="succeeded"} 1.0' in text
    assert "jobs_waiting 0.0" in text
    assert 'job_duration_seconds_count{kind="storefronts"} 1.0' in text
