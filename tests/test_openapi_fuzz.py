"""Schemathesis over the server's own OpenAPI schema: generated requests to every route (bodies
that fit the schema and bodies that break it) never get a 5xx from the real server."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlforge import Forecaster
from dlforge.serve.app import ServedModel, ServeSettings, served_run
from tests.serving import Server
from tests.test_serve_forecast import TINY as TINY_FORECAST
from tests.test_serve_forecast import monthly


@pytest.fixture(scope="module")
def fox(tiny_lm):
    return tiny_lm[1]  # conftest: a run named fox, trained once for the session


@pytest.fixture(scope="module")
def sales(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz-forecast") / "sales"
    Forecaster(window=4, horizon=2, **TINY_FORECAST).fit(monthly(40), "sales", time="month",
                                                         ).save(out)
    return out


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_no_request_gets_a_server_error(trained_run, fox, sales, mode):
    run, _ = trained_run
    models = [ServedModel(run, name="tweets"), served_run(fox), served_run(sales)]
    config = ServeSettings(max_delay_ms=1, max_new_tokens=64)  # generations stay short
    with Server(models, config) as srv:
        schema = schemathesis.openapi.from_url(srv.url + "/openapi.json")
        # A served model's name three times in four (past the 404, into validation and the
        # model), a generated one otherwise.
        cases = st.one_of(schema.as_strategy(mode, path_parameters={"name": "tweets"}),
                          schema.as_strategy(mode, path_parameters={"name": "fox"}),
                          schema.as_strategy(mode, path_parameters={"name": "sales"}),
                          schema.as_strategy(mode))
        seen: set[str] = set()

        @given(case=cases)
        @settings(max_examples=200, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            seen.add(f"{case.method} {case.operation.path}")
            response = case.call(base_url=srv.url, timeout=30)
            assert response.status_code < 500, (case.method, case.formatted_path, case.body,
                                                response.status_code, response.text[:300])

        check()
    # Every route was reached (schema-breaking bodies exist only for the two POST routes).
    assert len(seen) >= (10 if mode == schemathesis.GenerationMode.POSITIVE else 4), seen
