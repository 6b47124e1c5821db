"""Property-based fuzzing of every operation of openapi.json against the app, in process, on the local providers."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

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
