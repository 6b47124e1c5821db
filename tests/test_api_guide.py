"""docs/API.md, the guide for people who call the service, names exactly the routes and error codes of openapi.json;
the repository stands on its own: every link of its Markdown resolves inside it, and nothing points outside."""

from __future__ import annotations

import re
import subprocess

import pytest

from api_docs import load_openapi
from serving import REPO

GUIDE = REPO / "docs" / "API.md"
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
# A route heading, as the guide's introduction describes it: #### `GET /get-recommendations`
ROUTE_HEADING = re.compile(r"^#{2,6} `(GET|PUT|POST|DELETE|PATCH) (/[^`\s]*)`\s*$", re.MULTILINE)
CODE = re.compile(r"`([a-z]+(?:_[a-z]+)*)`")
OUTSIDE = "../" + "shared"  # spelt in two parts, so that this file does not match its own search


def documented_routes() -> set[tuple[str, str]]:
    return {(method.lower(), path) for method, path in ROUTE_HEADING.findall(GUIDE.read_text(encoding="utf-8"))}


def documented_codes() -> set[str]:
    """The codes in the first column of every Markdown table whose first column is headed `code`."""
    codes: set[str] = set()
    in_table = False
    for line in GUIDE.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if not cells:
            in_table = False
        elif cells[0] == "code":
            in_table = True
        elif in_table and not set(cells[0]) <= set("-: "):
            codes.update(CODE.findall(cells[0]))
    return codes


def openapi_codes(node) -> set[str]:
    """Every value a `code` property of the document may take."""
    codes: set[str] = set()
    if isinstance(node, dict):
        code = node.get("properties", {}).get("code", {})
        codes.update(code.get("enum", []))
        for child in node.values():
            codes |= openapi_codes(child)
    elif isinstance(node, list):
        for child in node:
            codes |= openapi_codes(child)
    return codes


def test_the_guide_has_every_route_of_the_document_and_no_other():
    document = load_openapi()
    routes = {(method, path) for path, item in document["paths"].items() for method in item if method in HTTP_METHODS}
    assert len(routes) >= 20
    documented = documented_routes()
    assert routes - documented == set(), "in openapi.json, not in docs/API.md"
    assert documented - routes == set(), "in docs/API.md, not in openapi.json"


def test_the_guide_has_every_error_code_of_the_document_and_no_other():
    codes = openapi_codes(load_openapi())
    assert {"missing_parameter", "theme_not_found", "method_not_allowed", "provider_busy"} <= codes
    documented = documented_codes()
    assert codes - documented == set(), "in openapi.json, not in docs/API.md"
    assert documented - codes == set(), "in docs/API.md, not in openapi.json"


def test_the_guide_parser_reads_headings_and_code_tables(tmp_path, monkeypatch):
    """The two readers above, on a small page: a missed heading or table would let the checks pass vacuously."""
    page = tmp_path / "API.md"
    page.write_text("## Jobs\n\n#### `GET /jobs/{id}`\n\nText with `not_a_code_table`.\n\n| code | status |\n"
                    "|---|---|\n| `job_not_found` | 404 |\n| `job_running`, `job_finished` | 409 |\n\n"
                    "| key | meaning |\n|---|---|\n| `status` | its state |\n", encoding="utf-8")
    monkeypatch.setattr(f"{__name__}.GUIDE", page)
    assert documented_routes() == {("get", "/jobs/{id}")}
    assert documented_codes() == {"job_not_found", "job_running", "job_finished"}


def tracked_files() -> list[str]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    return [name for name in listed.stdout.decode().split("\0") if name]


def test_nothing_in_the_repository_points_outside_it():
    offenders = []
    for name in tracked_files():
        path = REPO / name
        if path.is_file() and OUTSIDE.encode() in path.read_bytes():
            offenders.append(name)
    assert offenders == []


@pytest.mark.parametrize("page", ["README.md", "docs/API.md"])
def test_every_link_of_the_docs_resolves_inside_the_repository(page):
    text = (REPO / page).read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    for target in targets:
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = ((REPO / page).parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(REPO) and path.exists(), (page, target)
