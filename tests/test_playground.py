"""The playground page at GET /, driven in a real headless Chromium (Debian's chromium and
chromium-driver, through Selenium). ``.ci/run`` installs the browser and sets
DLFORGE_REQUIRE_BROWSER=1, so there a missing browser fails instead of skipping. The browser's
microphone is Chromium's fake one (a beep), allowed without asking."""

from __future__ import annotations

import base64
import io
import os
import shutil
import wave

import httpx
import numpy as np
import pandas as pd
import pytest

from dlforge.serve.app import ServedModel, ServeSettings
from tests.serving import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    if os.environ.get("DLFORGE_REQUIRE_BROWSER"):
        raise RuntimeError("DLFORGE_REQUIRE_BROWSER is set but chromium / chromedriver are "
                           "not installed (apt-get install chromium chromium-driver)")
    pytest.skip("chromium and chromedriver are not installed", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1000,900", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream"):
        opts.add_argument(flag)
    service = webdriver.ChromeService(executable_path=DRIVER)
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _label(browser, timeout: float = 30) -> str:
    WebDriverWait(browser, timeout).until(
        lambda d: d.find_element(By.ID, "label").text or d.find_element(By.ID, "error").text)
    err = browser.find_element(By.ID, "error").text
    assert not err, err
    return browser.find_element(By.ID, "label").text


def test_typing_a_text_shows_the_label_bars_and_latency(browser, trained_run):
    run, csv = trained_run
    text = pd.read_csv(csv)["review"].iloc[0]
    served = ServedModel(run, name="tweets")
    with Server([served], ServeSettings(max_delay_ms=1)) as srv:
        expected = httpx.post(f"{srv.url}/v1/models/tweets/predict",
                              json={"instances": [{"review": text}]}).json()["predictions"][0]
        browser.get(srv.url + "/")
        box = WebDriverWait(browser, 30).until(
            EC.presence_of_element_located((By.ID, "in-review")))
        assert Select(browser.find_element(By.ID, "model")).first_selected_option.text == "tweets"
        box.send_keys(text)
        browser.find_element(By.ID, "predict").click()
        assert _label(browser) == str(expected["label"])
        bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
        assert len(bars) == len(expected["probabilities"])
        shown = {b.find_element(By.CLASS_NAME, "name").text: b.find_element(
            By.CLASS_NAME, "value").text for b in bars}
        for cls, p in expected["probabilities"].items():
            assert shown[cls] == f"{100 * p:.1f}%"
        assert browser.find_element(By.ID, "latency").text.endswith("ms round trip")


def test_api_key_and_bad_input_are_reported_on_the_page(browser, trained_run, tmp_path):
    from dlforge import TabularRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=80)
    reg = TabularRegressor(numeric=["x"], epochs=2, hidden=[8], verbose=0, precision="fp32")
    reg.fit(pd.DataFrame({"x": x}), 3 * x + 1)
    reg.save(tmp_path / "line")
    served = ServedModel(tmp_path / "line")
    with Server([served], ServeSettings(api_key="s3cret")) as srv:
        browser.get(srv.url + "/")
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "error").text)
        assert "API key" in browser.find_element(By.ID, "error").text
        browser.find_element(By.ID, "apikey").send_keys("s3cret")
        browser.execute_script(
            "document.getElementById('apikey').dispatchEvent(new Event('change'))")
        box = WebDriverWait(browser, 30).until(EC.presence_of_element_located((By.ID, "in-x")))
        box.send_keys("2")
        browser.find_element(By.ID, "predict").click()
        value = float(_label(browser))
        want = served.predict([{"x": 2.0}])[0]["prediction"]
        assert value == pytest.approx(want, rel=1e-5)


def test_uploading_an_image_shows_its_label(browser, tmp_path):
    """An 8-bit grayscale model: the page draws the upload at the trained size and sends its
    pixels; the label is the one the server gives for the file's own pixels."""
    from PIL import Image

    from dlforge import ImageClassifier

    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(120):
        img = rng.integers(0, 60, size=(16, 16)).astype(np.uint8)
        top = i % 2 == 0
        img[:8 if top else 16, :] += 150 if top else 0
        img[8:, :] += 0 if top else 150
        images.append(img)
        labels.append("top" if top else "bottom")
    clf = ImageClassifier(channels=[8], blocks=1, epochs=10, batch_size=16, lr=1e-2, verbose=0,
                          precision="fp32", patience=0).fit(np.stack(images), labels)
    assert clf.metrics_["validation"]["accuracy"] >= 0.9
    clf.save(tmp_path / "halves")
    sure = int(np.abs(clf.predict_proba(np.stack(images))[:, 0] - 0.5).argmax())
    png = tmp_path / "upload.png"
    Image.fromarray(images[sure]).save(png)
    served = ServedModel(tmp_path / "halves")
    want = served.predict([{"image": images[sure]}])[0]["label"]
    with Server([served], ServeSettings()) as srv:
        meta = httpx.get(f"{srv.url}/v2/models/halves").json()["inputs"][0]
        assert meta["image"] == {"height": 16, "width": 16, "channels": 1, "range": "0-255"}
        browser.get(srv.url + "/?model=halves")
        box = WebDriverWait(browser, 30).until(
            EC.presence_of_element_located((By.ID, "in-image")))
        box.send_keys(str(png))
        browser.find_element(By.ID, "predict").click()
        assert _label(browser) == want == labels[sure]


def test_a_language_model_streams_into_the_page(browser, tmp_path):
    from dlforge import LanguageModel
    from dlforge.serve.app import served_run
    from tests.test_lm import TEXT, TINY

    lm = LanguageModel(**TINY).fit(TEXT, out=tmp_path / "fox")
    want = lm.generate("the lazy", max_new_tokens=40, temperature=0)
    with Server([served_run(tmp_path / "fox")], ServeSettings()) as srv:
        browser.get(srv.url + "/")
        box = WebDriverWait(browser, 30).until(
            EC.presence_of_element_located((By.ID, "in-text_input")))
        assert browser.find_element(By.ID, "predict").text == "Generate"
        box.send_keys("the lazy")
        for field, value in (("gen-max", "40"), ("gen-temp", "0")):
            el = browser.find_element(By.ID, field)
            el.clear()
            el.send_keys(value)
        browser.find_element(By.ID, "predict").click()
        WebDriverWait(browser, 60).until(
            lambda d: "tokens/s" in d.find_element(By.ID, "latency").text
            or d.find_element(By.ID, "error").text)
        assert not browser.find_element(By.ID, "error").text
        generated = browser.execute_script("return document.getElementById('generated')"
                                           ".textContent")
        assert generated == want
        assert browser.find_element(By.ID, "latency").text.startswith("40 tokens (length)")


def test_a_chat_model_holds_a_conversation(browser, tmp_path):
    from dlforge.estimators.pretrained_lm import PretrainedLM
    from dlforge.serve.app import served_run
    from dlforge.testing import tiny_causal_lm

    folder = tiny_causal_lm(tmp_path / "tiny", "llama")
    lm = PretrainedLM.load(folder)
    with Server([served_run(folder)], ServeSettings()) as srv:
        browser.get(srv.url + "/")
        box = WebDriverWait(browser, 30).until(
            EC.presence_of_element_located((By.ID, "in-message")))
        assert browser.find_element(By.ID, "predict").text == "Send"
        assert browser.find_element(By.ID, "chat-reset").is_displayed()
        browser.find_element(By.ID, "in-system").send_keys("You are terse.")
        for field, value in (("gen-max", "8"), ("gen-temp", "0")):
            el = browser.find_element(By.ID, field)
            el.clear()
            el.send_keys(value)
        messages = [{"role": "system", "content": "You are terse."}]
        for i, text in enumerate(("hello there", "and then?")):
            box.send_keys(text)
            browser.find_element(By.ID, "predict").click()
            WebDriverWait(browser, 60).until(
                lambda d, n=i + 1: len(d.find_elements(By.CSS_SELECTOR, "#chat .assistant")) == n
                and "tokens/s" in d.find_element(By.ID, "latency").text
                or d.find_element(By.ID, "error").text)
            assert not browser.find_element(By.ID, "error").text
            messages.append({"role": "user", "content": text})
            want = lm.chat(messages, max_new_tokens=8, temperature=0)
            answers = browser.find_elements(By.CSS_SELECTOR, "#chat .assistant")
            got = browser.execute_script("return arguments[0].textContent", answers[-1])
            assert got == want  # the second answer saw the whole conversation
            messages.append({"role": "assistant", "content": want})
            assert browser.find_element(By.ID, "in-message").get_attribute("value") == ""
        users = browser.find_elements(By.CSS_SELECTOR, "#chat .user")
        assert [u.text for u in users] == ["hello there", "and then?"]
        browser.find_element(By.ID, "chat-reset").click()
        assert not browser.find_elements(By.CSS_SELECTOR, "#chat .turn")


def test_pasting_a_series_shows_its_label(browser, tmp_path):
    from dlforge import SequenceModel
    from tests.test_sequences import waves

    seqs, labels = waves(80)
    SequenceModel("rnn", hidden=8, epochs=3, verbose=0, precision="fp32").fit(
        seqs, labels).save(tmp_path / "waves")
    served = ServedModel(tmp_path / "waves")
    series = [round(float(v), 4) for v in seqs[0]]
    want = served.predict(served.check([{"sequence": series}]))[0]["label"]
    with Server([served], ServeSettings()) as srv:
        browser.get(srv.url + "/")
        box = WebDriverWait(browser, 30).until(
            EC.presence_of_element_located((By.ID, "in-sequence")))
        box.send_keys(", ".join(str(v) for v in series))
        browser.find_element(By.ID, "predict").click()
        assert _label(browser) == want


def test_a_forecast_shows_its_table_and_chart(browser, tmp_path):
    from dlforge import Forecaster
    from dlforge.serve.app import served_run
    from tests.test_serve_forecast import TINY, monthly

    df = monthly(48)
    Forecaster(window=12, horizon=4, **TINY).fit(df, "sales", time="month").save(
        tmp_path / "sales")
    served = served_run(tmp_path / "sales")
    history = df.iloc[-20:]
    want = served.predict(served.check([{
        "sales": history["sales"].tolist(),
        "month": [t.strftime("%Y-%m-%d") for t in history["month"]]}]))[0]["forecast"]
    with Server([served], ServeSettings()) as srv:
        browser.get(srv.url + "/")
        box = WebDriverWait(browser, 30).until(
            EC.presence_of_element_located((By.ID, "in-sales")))
        assert browser.find_element(By.ID, "predict").text == "Forecast"
        box.send_keys(", ".join(str(v) for v in history["sales"]))
        browser.find_element(By.ID, "in-month").send_keys(
            "\n".join(t.strftime("%Y-%m-%d") for t in history["month"]))
        browser.find_element(By.ID, "predict").click()
        WebDriverWait(browser, 30).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#forecast td")
            or d.find_element(By.ID, "error").text)
        assert not browser.find_element(By.ID, "error").text
        rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                for tr in browser.find_elements(By.CSS_SELECTOR, "#forecast tr")[1:]]
        assert [r[0] for r in rows] == want["month"]
        assert [int(r[1]) for r in rows] == want["step"]
        np.testing.assert_allclose([float(r[2]) for r in rows], want["sales"], atol=5e-4)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#forecast svg polyline")) == 2
        if os.environ.get("DLFORGE_SCREENSHOT"):
            browser.save_screenshot(os.environ["DLFORGE_SCREENSHOT"])


@pytest.fixture(scope="module")
def tones(one_thread, tmp_path_factory):
    """A tiny audio model telling a high tone from a low one (8 kHz, 2 s windows), saved:
    (run directory, a WAV file of one of its training clips)."""
    sf = pytest.importorskip("soundfile")
    from dlforge import AudioClassifier

    rate, t = 8000, np.arange(4000) / 8000
    clips, labels = [], []
    for i in range(24):
        hz = (300 if i % 2 else 1500) * (1 + 0.02 * (i // 2))
        clips.append((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32))
        labels.append("low" if i % 2 else "high")
    clf = AudioClassifier(sample_rate=rate, clip_seconds=2.0, n_mels=16, channels=[4, 8],
                          epochs=4, batch_size=8, verbose=0).fit(clips, labels)
    d = tmp_path_factory.mktemp("tones")
    clf.save(d / "tones")
    sf.write(d / "clip.wav", clips[0], rate)
    return d / "tones", d / "clip.wav"


def test_uploading_an_audio_clip_shows_its_label(browser, tones):
    """An audio model: the page sends the uploaded file's bytes (base64); the label is the one
    the server gives for the same file."""
    run, wav = tones
    served = ServedModel(run)
    want = served.predict(served.check([{"audio": wav.read_bytes()}]))[0]["label"]
    with Server([served], ServeSettings()) as srv:
        meta = httpx.get(f"{srv.url}/v2/models/tones").json()["inputs"][0]
        assert meta["kind"] == "audio" and meta["audio"]["sample_rate"] == 8000
        browser.get(srv.url + "/?model=tones")
        box = WebDriverWait(browser, 30).until(
            EC.presence_of_element_located((By.ID, "in-audio")))
        box.send_keys(str(wav))
        browser.find_element(By.ID, "predict").click()
        assert _label(browser) == want


def test_recording_a_clip_sends_a_wav_and_shows_its_label(browser, tones):
    """Record, then Stop: the page turns the fake microphone's samples into a 16-bit PCM WAV
    and sends it as an uploaded file; what the server received is checked here. Chromium's
    fake microphone beeps every 0.5 s, so 0.8 s of recording holds a beep."""
    run, _ = tones
    served = ServedModel(run)
    received = []
    check = served.check

    def keep(instances, where="instances"):  # the instances as the server got them
        received.extend(instances)
        return check(instances, where)

    served.check = keep
    with Server([served], ServeSettings()) as srv:
        browser.get(srv.url + "/?model=tones")
        button = WebDriverWait(browser, 30).until(
            EC.presence_of_element_located((By.ID, "record-audio")))
        button.click()
        WebDriverWait(browser, 10, poll_frequency=0.02).until(
            lambda d: button.text == "Stop" or d.find_element(By.ID, "error").text)
        assert not browser.find_element(By.ID, "error").text
        browser.execute_script("return new Promise((ok) => setTimeout(ok, 800))")
        button.click()
        label = _label(browser)
        assert button.text == "Record"
        assert browser.find_element(By.ID, "record-status-audio").text.startswith("recorded ")
    assert len(received) == 1
    raw = base64.b64decode(received[0]["audio"])
    assert raw[:4] == b"RIFF" and raw[8:16] == b"WAVEfmt "
    with wave.open(io.BytesIO(raw)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getcomptype()) == (1, 2, "NONE")
        rate, n = w.getframerate(), w.getnframes()
        samples = np.frombuffer(w.readframes(n), dtype="<i2")
    assert rate >= 8000 and 0.6 < n / rate < 2.0  # stopped by the click, before the 2 s cap
    assert len(samples) == n and np.abs(samples).max() > 0
    assert label in {"high", "low"}
    assert label == served.predict(served.check([{"audio": raw}]))[0]["label"]


def test_a_seq2seq_run_turns_a_source_into_text(browser, one_thread, tmp_path):
    from dlforge import Seq2Seq
    from dlforge.serve.app import served_run
    from tests.test_seq2seq import TINY, upper_pairs

    src, tgt = upper_pairs(120)
    s2s = Seq2Seq(**TINY).fit(src, tgt, out=tmp_path / "upper")
    source = "blue cat sun"
    want = s2s.predict([source])[0]
    assert want
    with Server([served_run(tmp_path / "upper")], ServeSettings()) as srv:
        browser.get(srv.url + "/")
        box = WebDriverWait(browser, 30).until(
            EC.presence_of_element_located((By.ID, "in-source")))
        assert browser.find_element(By.ID, "predict").text == "Generate"
        assert "sequence to sequence" in browser.find_element(By.ID, "meta").text
        box.send_keys(source)
        browser.find_element(By.ID, "predict").click()
        WebDriverWait(browser, 30).until(
            lambda d: d.find_element(By.ID, "latency").text or d.find_element(By.ID, "error").text)
        assert not browser.find_element(By.ID, "error").text
        got = browser.execute_script("return document.getElementById('output').textContent")
        assert got == want
