"""Property-based fuzzing of every operation of openapi.json against the app, in process, on the local providers."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from api_docs import load_openapi

ADMIN_TOKEN = "fuzz-admin-token"
# Documented ahead of their routes, which another branch adds; the lead removes this exception when merging it.
PENDING_PATHS = ["/healthz", "/metrics"]
# Examples per operation: with the coverage and example phases, about 30 s for the whole document on 2 cores.
MAX_EXAMPLES = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
]

schema = schemathesis.openapi.from_dict(load_openapi()).exclude(path=PENDING_PATHS)


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
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_operation_conforms(case, fuzz_app):
    checks = CHECKS
    if case.operation.body:
        # Where a body may carry the query's fields, OpenAPI cannot say that either place will do and that the
        # query wins; and the contract refuses values JSON Schema calls valid (`10.0` as a count, 31 February).
        # Whether such a request must be accepted is for the regular tests to say, not the schema.
        checks = [check for check in CHECKS if check not in (negative_data_rejection, positive_data_acceptance)]
    # The fixtures' client reads every answer whole, so that PNG and asset answers close their files.
    case.call_and_validate(
        app=fuzz_app, session=fuzz_app.test_client(), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        checks=checks,
    )
