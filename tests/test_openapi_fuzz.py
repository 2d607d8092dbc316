"""Schemathesis over the server's own OpenAPI schema: generated requests to every route (bodies
that fit the schema and bodies that break it) never get a 5xx from the real server."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlforge.serve.app import ServedModel, ServeSettings
from tests.serving import Server


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_no_request_gets_a_server_error(trained_run, mode):
    run, _ = trained_run
    with Server([ServedModel(run, name="tweets")], ServeSettings(max_delay_ms=1)) as srv:
        schema = schemathesis.openapi.from_url(srv.url + "/openapi.json")
        # The served model's name half the time (past the 404, into validation and the
        # model), a generated one otherwise.
        cases = st.one_of(schema.as_strategy(mode, path_parameters={"name": "tweets"}),
                          schema.as_strategy(mode))
        seen: set[str] = set()

        @given(case=cases)
        @settings(max_examples=120, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            seen.add(f"{case.method} {case.operation.path}")
            response = case.call(base_url=srv.url, timeout=30)
            assert response.status_code < 500, (case.method, case.formatted_path, case.body,
                                                response.status_code, response.text[:300])

        check()
    # Every route was reached (schema-breaking bodies exist only for the two POST routes).
    assert len(seen) >= (7 if mode == schemathesis.GenerationMode.POSITIVE else 2), seen
