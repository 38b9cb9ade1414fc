"""schemathesis against the routing service's OpenAPI document, once per role (agent, reader,
admin): every operation, generated valid and invalid bodies, no 5xx, every answer matching the
document (status, content type, headers, schema) and bodies that break the document refused
with a 4xx. Fixed seed (derandomized) and bounded examples.

Not checked: "a body valid by the document is accepted". The document gives JSON types
only; the rules (confidence in [0, 1], a non-blank problem, ttl > 0...) are the library's,
checked by the library (one copy), and the roles are the service's (a reader's deposit is a
403), so a body of the right types may still get a 4xx naming what it breaks.
"""
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from qis_lib.embedders import HashEmbedder
from qis_lib.serve.app import create_app
from qis_lib.serve.auth import Credentials
from qis_lib.serve.namespaces import Namespaces

KEYS = {"agent": "agent-key-0123456789", "reader": "reader-key-0123456789", "admin": "admin-key-0123456789"}
CREDENTIALS = Credentials.parse({"keys": [
    {"id": "a", "role": "agent", "agent": "alice", "key": KEYS["agent"], "rate_per_s": None, "max_concurrent": None},
    {"id": "r", "role": "reader", "key": KEYS["reader"], "rate_per_s": None, "max_concurrent": None},
    {"id": "o", "role": "admin", "key": KEYS["admin"]}]})
APP = create_app(Namespaces("memory://", HashEmbedder(), limit=8), auth=CREDENTIALS)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.mark.parametrize("role", sorted(KEYS))
@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_its_document(case, role):
    case.call_and_validate(headers={"X-API-Key": KEYS[role]}, excluded_checks=[positive_data_acceptance])
