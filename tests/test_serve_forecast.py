"""Serving forecasting runs: a series in, the horizon's forecast out, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import shutil

import httpx
import numpy as np
import pandas as pd
import pytest

from dlforge import Forecaster, load
from dlforge.cli import main
from dlforge.serve.app import ServeSettings, served_run
from dlforge.serve.forecast import ServedForecaster

from .serving import Server

TINY = dict(hidden=8, d_model=8, epochs=2, batch_size=16, patience=0, verbose=0,
            precision="fp32")


def monthly(n: int = 72, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    sales = 100 + t + 10 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 1, n)
    return pd.DataFrame({"month": pd.date_range("2018-01-01", periods=n, freq="MS"),
                         "sales": sales.round(3)})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("forecast-runs")
    df = monthly()
    Forecaster(window=12, horizon=4, **TINY).fit(df, "sales", time="month").save(root / "sales")
    rng = np.random.default_rng(1)
    n = 80
    promo = (rng.random(n) < 0.3).astype(float)
    temp = np.sin(np.arange(n) / 5).round(3)
    exo = pd.DataFrame({"sales": (50 + 30 * promo + 5 * temp).round(3), "temp": temp,
                        "promo": promo})
    Forecaster(window=8, horizon=3, **TINY).fit(exo, "sales", covariates=["temp"],
                                                exogenous=["promo"]).save(root / "promo")
    return root, df, exo


def columns(df: pd.DataFrame) -> dict:
    out = {}
    for c in df.columns:
        col = df[c]
        out[c] = ([t.strftime("%Y-%m-%d") for t in col] if c == "month" else
                  [None if pd.isna(v) else float(v) for v in col])
    return out


def test_forecasts_over_http_equal_predict(runs):
    root, df, exo = runs
    sales, promo = served_run(root / "sales"), served_run(root / "promo")
    assert isinstance(sales, ServedForecaster)
    fc, fc_exo = load(root / "sales"), load(root / "promo")
    with Server([sales, promo], ServeSettings(max_delay_ms=2)) as srv, \
            httpx.Client(base_url=srv.url) as c:
        meta = c.get("/v2/models/sales").json()
        assert meta["parameters"]["task"] == "forecast"
        assert meta["parameters"]["window"] == 12 and meta["parameters"]["horizon"] == 4
        assert [i["name"] for i in meta["inputs"]] == ["sales", "month"]
        assert meta["outputs"] == [{"name": "sales", "datatype": "FP32", "shape": [-1, 4]}]

        histories = [df.iloc[:40], df.iloc[:60], df]  # three series in one request
        r = c.post("/v1/models/sales/predict",
                   json={"instances": [columns(h) for h in histories]})
        assert r.status_code == 200, r.text
        for h, p in zip(histories, r.json()["predictions"], strict=True):
            want = fc.predict(h)
            got = p["forecast"]
            assert got["step"] == [1, 2, 3, 4]
            assert got["month"] == [t.strftime("%Y-%m-%d") for t in want["month"]]
            np.testing.assert_allclose(got["sales"], want["sales"], rtol=1e-5)

        # Without the (optional) time column: steps and values only.
        r = c.post("/v1/models/sales/predict",
                   json={"instances": [{"sales": df["sales"].tolist()[-12:]}]})
        assert set(r.json()["predictions"][0]["forecast"]) == {"step", "sales"}

        # Exogenous: the last 3 entries are the future; the target may be null there.
        future = exo.copy()
        future.loc[future.index[-3:], ["sales", "temp"]] = np.nan
        r = c.post("/v1/models/promo/predict", json={"instances": [columns(future)]})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"][0]["forecast"]["sales"],
                                   fc_exo.predict(exo)["sales"], rtol=1e-5)

        # Open Inference Protocol v2: one [N, T] tensor per column, [N, H] per target out.
        body = {"inputs": [{"name": "sales", "datatype": "FP32", "shape": [2, 12],
                            "data": df["sales"].tolist()[-24:]}]}
        r = c.post("/v2/models/sales/infer", json=body)
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["name"] == "sales" and out["shape"] == [2, 4]
        first = fc.predict(df.iloc[-24:-12][["sales"]])["sales"]
        np.testing.assert_allclose(out["data"][:4], first, rtol=1e-5)

        r = c.post("/v1/models/sales/explain", json={"instances": [columns(df)]})
        assert r.status_code == 422 and "no supported attribution" in r.json()["detail"]


def test_concurrent_forecasts_are_batched(runs):
    root, df, _ = runs
    settings = ServeSettings(max_batch_size=16, max_delay_ms=50)
    with Server([served_run(root / "sales")], settings) as srv:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=srv.url) as c:
                return await asyncio.gather(*(
                    c.post("/v1/models/sales/predict",
                           json={"instances": [columns(df.iloc[:30 + i])]})
                    for i in range(12)))

        responses = asyncio.run(burst())
        assert all(r.status_code == 200 for r in responses)
        text = httpx.get(f"{srv.url}/metrics").text
    forwards = sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("dlforge_batch_size_count"))
    assert forwards < 12  # fewer model passes than requests
    fc = load(root / "sales")
    for i, r in enumerate(responses):
        np.testing.assert_allclose(r.json()["predictions"][0]["forecast"]["sales"],
                                   fc.predict(df.iloc[:30 + i])["sales"], rtol=1e-5)


BAD = [
    ("not an object", [1, 2], "instances[0]: expected an object"),
    ("missing target", {"month": ["2020-01-01"] * 12}, "instances[0].sales: missing"),
    ("unknown field", {"sales": [1.0] * 12, "price": [1.0] * 12},
     "instances[0].price: unknown field"),
    ("not a list", {"sales": 3.0}, "instances[0].sales: expected a list"),
    ("too short", {"sales": [1.0] * 5}, "instances[0].sales: 5 values; a forecast needs at "
                                        "least 12"),
    ("a string", {"sales": [1.0] * 11 + ["x"]}, "instances[0].sales[11]: expected a finite"),
    ("a null", {"sales": [None] + [1.0] * 11}, "instances[0].sales[0]: expected a finite"),
    ("lengths differ", {"sales": [1.0] * 12, "month": ["2020-01-01"] * 13},
     "instances[0].month: 13 values, but sales has 12"),
    ("bad time", {"sales": [1.0] * 12, "month": ["2020-01-01"] * 12},
     "duplicate time"),
]


@pytest.mark.parametrize("case,instance,message", BAD, ids=[b[0] for b in BAD])
def test_bad_series_get_422_naming_the_field(runs, case, instance, message):
    root, _, _ = runs
    with Server([served_run(root / "sales")], ServeSettings()) as srv:
        r = httpx.post(f"{srv.url}/v1/models/sales/predict", json={"instances": [instance]})
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]


def test_exogenous_future_must_be_given(runs):
    root, _, exo = runs
    bad = columns(exo)
    bad["promo"][-1] = None  # the future of a known-ahead column is not optional
    with Server([served_run(root / "promo")], ServeSettings()) as srv:
        r = httpx.post(f"{srv.url}/v1/models/promo/predict", json={"instances": [bad]})
        assert r.status_code == 422
        assert "instances[0].promo[79]: expected a finite number, got None" in r.json()["detail"]
        short = {k: v[-10:] for k, v in columns(exo).items()}  # window 8 + horizon 3 = 11
        r = httpx.post(f"{srv.url}/v1/models/promo/predict", json={"instances": [short]})
        assert r.status_code == 422 and "plus 3 future steps" in r.json()["detail"]


def test_forecasters_export_to_onnx_and_serve_through_it(runs, tmp_path, capsys):
    root, df, exo = runs
    for name, data in (("sales", df), ("promo", exo)):
        run = tmp_path / name
        shutil.copytree(root / name, run)
        assert main(["export", str(run), "--format", "onnx"]) == 0, capsys.readouterr().err
        info = json.loads(run.with_suffix(".onnx.json").read_text())
        assert info["max_abs_difference"] <= 1e-4
        assert info["labels"]["kind"] == "forecast"
        want = (["window", "window_mask"] + (["future"] if name == "promo" else []))
        assert [i["name"] for i in info["inputs"]] == want
        torch_served, onnx_served = served_run(run), served_run(run, backend="onnx")
        history = data if name == "promo" else data.iloc[:50]
        rows = torch_served.check([columns(history), columns(data)])
        for a, b in zip(torch_served.predict(rows), onnx_served.predict(rows), strict=True):
            target = "sales"
            np.testing.assert_allclose(b["forecast"][target], a["forecast"][target],
                                       rtol=1e-4, atol=1e-3)
    capsys.readouterr()
