"""Schemathesis hooks for this API, for tests/test_fuzz.py and `schemathesis run` (SCHEMATHESIS_HOOKS, see README)."""

import schemathesis

# A bare VC-JWT sent to /verify is text: generated strings go as they are.
schemathesis.serializer.alias(["application/jwt", "application/vc+jwt"], "text/plain")
