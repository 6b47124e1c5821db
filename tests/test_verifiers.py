"""Credentials checked by verifiers we did not write, against `python main.py`, with no network but the service:
the Digital Credentials Consortium's verifier-core on the embedded proof and on revocation, `jose` on the VC-JWT by
Open Badges 3.0 section 8.2 (the key fetched from its `kid`), and 1EdTech's JSON Schema on both forms.

The npm packages are pinned in tests/verifiers/package-lock.json (`.ci/run` installs them); 1EdTech's schema is a
data file of the team's, never copied into the repository: read from the folder beside it, when it is there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import jsonschema_rs
import jwt as pyjwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import create_engine, insert
from sqlalchemy.pool import NullPool

from badges.rdfc import CONTEXTS
from models import Achievement
from serving import REPO, running, server_env

VERIFIERS = REPO / "tests" / "verifiers"
OB3_SCHEMA = REPO.parent / "shared" / "ob3" / "ob_v3p0_achievementcredential_schema.json"
# Where verifier-core looks for the schema of an OpenBadgeCredential: answered from the file above.
OB3_SCHEMA_URL = "https://purl.imsglobal.org/spec/ob/v3p0/schema/json/ob_v3p0_achievementcredential_schema.json"
# An LLM writes achievement names: emoji (outside the BMP, and beside a character of U+E000-U+FFFF, which JavaScript
# sorts differently), accents (one precomposed, one combining), CJK, and a control character.
HARD_NAME = "Caf\u00e9 Cre\u0300me \u6f22\u5b57\u306e\u738b \U0001f375\uff01\ue000 \x07Bell"
CREDENTIAL = "/users/{user}/achievements/{achievement}/credential"

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (.ci/run installs nodejs)"),
    pytest.mark.skipif(not (VERIFIERS / "node_modules").is_dir(),
                       reason="the verifiers are not installed: `cd tests/verifiers && npm ci` (.ci/run does)"),
]


@pytest.fixture(scope="module")
def service(tmp_path_factory, sqlite_template):
    """`python main.py` on a fresh SQLite database, its public URL set as production would set it, with user 1
    holding achievements 1 and 2, and 3 whose name is hard to canonicalize."""
    folder = tmp_path_factory.mktemp("verifiers")
    shutil.copyfile(sqlite_template, folder / "app.db")
    env = server_env(folder, f"sqlite:///{folder}/app.db", WEB_CONCURRENCY="1")
    env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{env['PORT']}"
    with running(env, folder) as server:
        assert requests.post(server.url("/seed-specific"), timeout=30).status_code == 201
        for product in ("soju", "tea"):
            assert requests.post(server.url(f"/gen-achievement-image?date=31 Oct&product={product}"),
                                 timeout=60).status_code == 200
        engine = create_engine(f"sqlite:///{folder}/app.db", poolclass=NullPool)
        with engine.begin() as connection:  # as the OpenAI writer would store what a model wrote
            connection.execute(insert(Achievement.__table__), [{
                "name": HARD_NAME, "description": f"{HARD_NAME}: \u00fcber \U0001f389\ttab", "occasion": "Chuseok",
                "product_type": "\u0442\u0435\u0430", "created_at": datetime.now(UTC)}])
        engine.dispose()
        assert requests.post(server.url("/assign-achievements-to-user"), json={
            "user_id": 1, "achievement_list": [1, 2, 3]}, timeout=30).status_code == 200
        yield server


def run_verifiers(server, credentials=(), jwts=()) -> dict:
    request = {"allow": [server.base_url], "credentials": list(credentials), "jwts": list(jwts),
               "schemas": {OB3_SCHEMA_URL: str(OB3_SCHEMA)} if OB3_SCHEMA.exists() else {}}
    result = subprocess.run(["node", str(VERIFIERS / "check.mjs")], input=json.dumps(request), capture_output=True,
                            text=True, timeout=120, cwd=VERIFIERS)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def get(server, path: str, form: str):
    response = requests.get(server.url(path), params={"format": form}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json() if form != "jwt" else response.text


def test_verifier_core_accepts_the_embedded_proof_with_no_network_but_the_service(service):
    credentials = [get(service, CREDENTIAL.format(user=1, achievement=n), "ldp") for n in (1, 3)]
    assert credentials[1]["name"] == HARD_NAME
    report = run_verifiers(service, credentials=credentials)
    for result in report["credentials"]:
        assert result["verified"] is True, result
        assert result["steps"]["valid_signature"] is True and result["steps"]["revocation_status"] is True
        # 1EdTech's schema is served from the team's copy when it sits beside the repository; else it is refused.
        assert result["refused"] == ([] if OB3_SCHEMA.exists() else [OB3_SCHEMA_URL])
        assert all(url.startswith(service.base_url) or "(local file)" in url for url in result["fetched"])
    # It resolved the key, the issuer and the status list from the service itself.
    fetched = report["credentials"][0]["fetched"]
    assert {credentials[0]["proof"][0]["verificationMethod"], credentials[0]["issuer"]["id"],
            credentials[0]["credentialStatus"]["statusListCredential"]} <= set(fetched)


def test_verifier_core_refuses_a_changed_credential(service):
    credential = get(service, CREDENTIAL.format(user=1, achievement=1), "ldp")
    [result] = run_verifiers(service, credentials=[{**credential, "name": "Something I did not earn"}])["credentials"]
    assert result["verified"] is False
    assert [error["name"] for error in result["errors"]] == ["invalid_signature"] or \
        result["steps"].get("valid_signature") is False


def test_verifier_core_sees_the_revocation_after_an_assign_removes_the_badge(service):
    credential = get(service, CREDENTIAL.format(user=1, achievement=2), "ldp")
    kept = get(service, CREDENTIAL.format(user=1, achievement=1), "ldp")
    before = run_verifiers(service, credentials=[credential])["credentials"][0]
    assert before["verified"] is True and before["revoked"] is False
    assert requests.post(service.url("/assign-achievements-to-user"), json={
        "user_id": 1, "achievement_list": [1, 3]}, timeout=30).status_code == 200
    after, still = run_verifiers(service, credentials=[credential, kept])["credentials"]
    assert after["revoked"] is True and after["verified"] is False
    assert after["steps"]["valid_signature"] is True  # the signature holds: only the status says no
    assert still["verified"] is True
    ours = requests.post(service.url("/verify"), json=credential, timeout=30).json()
    assert ours["proof"] == "eddsa-rdfc-2022" and ours["checks"]["status"] == "revoked"


def test_jose_verifies_the_vc_jwt_by_section_8_2_with_the_key_its_kid_answers(service):
    tokens = [get(service, CREDENTIAL.format(user=1, achievement=n), "jwt") for n in (1, 3)]
    tokens.append(get(service, "/status/1", "jwt"))
    report = run_verifiers(service, jwts=tokens)
    for result in report["jwts"]:
        assert result["verified"] is True, result
        assert result["header"]["alg"] == "RS256" and result["header"]["typ"] == "JWT"
    # A forged token is refused by the same checks: this test can fail.
    header = pyjwt.get_unverified_header(tokens[0])
    claims = pyjwt.decode(tokens[0], options={"verify_signature": False})
    another_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = [pyjwt.encode(claims, None, algorithm="none", headers={"typ": "JWT", "kid": header["kid"]}),
              pyjwt.encode({**claims, "name": "Something I did not earn"}, another_key, algorithm="RS256",
                           headers={"typ": "JWT", "kid": header["kid"]})]
    assert [result["verified"] for result in run_verifiers(service, jwts=forged)["jwts"]] == [False, False]


def test_the_contexts_are_those_the_verifier_bundles(service):
    shipped = run_verifiers(service)["contexts"]
    manifest = json.loads((CONTEXTS / "manifest.json").read_text(encoding="utf-8"))
    assert set(shipped) == set(manifest)
    for url, entry in manifest.items():
        assert json.loads((CONTEXTS / entry["file"]).read_text(encoding="utf-8")) == shipped[url], url


@pytest.mark.skipif(not OB3_SCHEMA.exists(), reason="1EdTech's JSON Schema for the credential is not beside the "
                    "repository (shared/ob3/): CI has it")
def test_both_forms_pass_1edtechs_json_schema(service):
    validator = jsonschema_rs.Draft201909Validator(json.loads(OB3_SCHEMA.read_text(encoding="utf-8")),
                                                   validate_formats=True)
    for n in (1, 3):
        path = CREDENTIAL.format(user=1, achievement=n)
        ldp = get(service, path, "ldp")
        payload = pyjwt.decode(get(service, path, "jwt"), options={"verify_signature": False})
        for document in (ldp, payload):
            assert list(validator.iter_errors(document)) == [], document
    assert not validator.is_valid({**ldp, "proof": [{**ldp["proof"][0], "type": 5}]})  # the schema can fail
    [result] = run_verifiers(service, credentials=[ldp])["credentials"]
    assert [entry["result"]["valid"] for entry in result["schema"]] == [True]


def readme_blocks(language: str) -> list[str]:
    """The `language` code blocks of the README's "Verifying with a tool we did not write", unindented."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("**Verifying with a tool we did not write.**"):readme.index("**The keys, and what")]
    return [textwrap.dedent(block) for block in re.findall(rf"```{language}\n(.*?)\n\s*```", section, re.DOTALL)]


def test_the_readme_verification_commands_work_as_written(service):
    env = {**os.environ, "BASE": service.base_url, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    [bash] = readme_blocks("bash")
    install, pipeline = [line for line in bash.splitlines() if line and not line.startswith("#")]
    assert install in (REPO / ".ci" / "run").read_text()  # .ci/run installs the verifiers with this very line
    result = subprocess.run(["bash", "-c", pipeline], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    [verdict] = json.loads(result.stdout)["credentials"]
    assert verdict["verified"] is True
    assert verdict["refused"] == [OB3_SCHEMA_URL]  # the only other URL it asks for: 1EdTech's schema, optional

    [python] = readme_blocks("python")
    result = subprocess.run([sys.executable, "-c", python], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"verified: {HARD_NAME}\n"
