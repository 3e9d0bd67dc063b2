"""The OpenAPI description of the inbound callback route, checked against the running listener by schemathesis
(its own CLI, in a child process): property-based bodies (valid, invalid, edge cases) find no 5xx and no answer
that breaks the description (status, content type, body schema, Retry-After)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.integration.payment_harness import payment_gateway

pytestmark = pytest.mark.integration
DESCRIPTION = Path(__file__).resolve().parents[2] / "contracts/openapi/payment-callbacks.v1.json"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance," \
    "response_headers_conformance,negative_data_rejection"


async def test_the_live_listener_keeps_its_openapi_description(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with payment_gateway(kafka_bootstrap, tmp_path, schedule=dict(inquiry_after_s=20.0)) as run:
        base = run.callback_url.rsplit("/callbacks", 1)[0]
        st = Path(sys.executable).parent / "st"
        # Invalid data is refused with any of the description's refusals: 413 (too large) and 408 too, not only
        # schemathesis's default list (400, 401, 403, 404, 409, 415, 422...).
        config = tmp_path / "schemathesis.toml"
        config.write_text('[checks.negative_data_rejection]\nexpected-statuses = '
                          '["400", "401", "403", "404", "408", "409", "413", "415"]\n', encoding="utf-8")
        proc = await asyncio.create_subprocess_exec(
            str(st), "--config-file", str(config), "run", str(DESCRIPTION), "--url", base, "--checks", CHECKS,
            "--phases", "examples,coverage,fuzzing", "--max-examples", "150", "--workers", "2", "--seed", "15",
            "--suppress-health-check", "all",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,  # its cache goes there
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
        text = out.decode(errors="replace")
        assert proc.returncode == 0, text[:3000] + " ... " + text[-1500:]
        assert run.gw is not None
        calls = run.gw.metrics.total("gateway_inbound_requests_total")
        assert calls >= 50, text[-2000:]  # it really did call the listener
