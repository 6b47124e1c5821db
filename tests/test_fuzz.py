"""Property-based fuzzing of every operation of openapi.json against the app, in process, on the local providers."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup

import schemathesis_hooks  # noqa: F401 - the media types of this API that schemathesis lacks
from api_docs import load_openapi

ADMIN_TOKEN = "fuzz-admin-token"
# The settings `schemathesis run` uses too: examples per operation, and the checks that do not apply where.
CONFIG = Path(__file__).parent.parent / "schemathesis.toml"

schema = schemathesis.openapi.from_dict(load_openapi(), config=SchemathesisConfig.from_path(CONFIG))


@pytest.fixture
def fuzz_app(make_app):
    """An app with an admin token and a little of everything, so that success paths are reached too."""
    app = make_app(ADMIN_TOKEN=ADMIN_TOKEN, IMAGE_PROVIDER="local", TEXT_PROVIDER="local")
    client = app.test_client()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert client.post("/seed-specific", headers=admin).status_code == 201
    counts = {"users": 2, "achievements": 3, "storefronts": 3}
    assert client.post("/seedrandom", headers=admin, json=counts).status_code == 201
    assert client.post("/gen-new-storefront-images?user_id=1&shop_theme=tech").status_code == 200
    assert client.post("/gen-achievement-image?date=31 Oct&product=soju").status_code == 200
    assert client.post("/assign-achievements-to-user?user_id=1&achievement_list=[1,2]").status_code == 200
    return app


# One app per operation, shared by its examples: state builds up as it would on a real server.
@schema.parametrize()
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_operation_conforms(case, fuzz_app):
    # Every check schemathesis has, but those schemathesis.toml turns off for this operation.
    # The fixtures' client reads every answer whole, so that PNG and asset answers close their files.
    case.call_and_validate(
        app=fuzz_app, session=fuzz_app.test_client(), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )


def test_a_real_event_stream_conforms(fuzz_app):
    """Fuzzed job ids never name a job: this checks the stream of real ones against the document, event by event
    (schemathesis reads a `text/event-stream` schema per event), and a check that can fail."""
    client = fuzz_app.test_client()
    job = client.post("/gen-new-storefront-images?user_id=1&shop_theme=all", headers={"Prefer": "wait=60"})
    assert job.status_code == 200
    jobs = client.get("/jobs", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).get_json()["jobs"]
    operation = schema["/jobs/{job_id}/events"]["GET"]
    for listed in jobs:
        case = operation.Case(path_parameters={"job_id": listed["id"]})
        response = case.call(app=fuzz_app, session=fuzz_app.test_client())
        assert response.status_code == 200
        assert b"event: status" in response.content
        case.validate_response(response)
    # The document as it was, the stream "a string": every event a mismatch.
    earlier = load_openapi()
    earlier["components"]["schemas"]["JobEvent"] = {"type": "string"}
    earlier_operation = schemathesis.openapi.from_dict(earlier)["/jobs/{job_id}/events"]["GET"]
    with pytest.raises(FailureGroup) as raised:
        earlier_operation.Case(path_parameters={"job_id": jobs[0]["id"]}).validate_response(response)
    assert [failure.title for failure in raised.value.exceptions] == ["SSE event violates schema"]
