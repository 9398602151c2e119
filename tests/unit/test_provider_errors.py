"""Provider errors by kind (the metrics' `rgrid_provider_errors_total{kind}`), in step with the
sentence explain() shows: Hetzner's error codes as the hcloud plugin reports them. The pulumi-fleet
grid checks the real ones (tests/fleet, scenario 4: a quota and 5xx answers of the local Hetzner)."""
from __future__ import annotations

import pytest

from rgrid_service.fleet import error_kind


@pytest.mark.parametrize("text,kind", [
    ("error creating server: server limit reached (resource_limit_exceeded, 403)", "quota"),
    ("dial tcp 127.0.0.1:9: connect: connection refused", "unreachable"),
    ("Post \"https://api.hetzner.cloud/v1/servers\": context deadline exceeded", "unreachable"),
    ("error creating server: service unavailable (service_error, 503)", "transient"),
    ("hcloud: rate limit exceeded (rate_limit_exceeded, 429)", "transient"),
    ("error during update: resource is locked (locked)", "transient"),
    ("error: invalid input in field 'server_type' (invalid_input)", "other"),
    ("", "other"),
])
def test_error_kind(text, kind):
    assert error_kind(RuntimeError(text)) == kind
