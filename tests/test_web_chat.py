"""The web chat page of `nanocode serve`: served at / by the real server, and driven in headless Chromium (selenium)
against a tiny scripted model: streamed replies, a second turn, a tool call as a collapsible block and its result
sent back, the api key asked for, and the model's markup shown as text."""

from __future__ import annotations

import http.client
import json
import shutil

import pytest

from nanocode.agents.server import CompletionServer
from nanocode.data.conversation import ConversationCodec
from nanocode.models.engine import Engine
from tests.helpers import small_tokenizer
from tests.test_chat import TINY, scripted_model, tool_call_chain
from tests.test_engine import tiny_model
from tests.test_serve import READ_TOOL, WIDE

KEY = "web-secret"
WAIT = 20  # seconds: a bound on each wait, not a timing assert (the first request compiles the model)


@pytest.fixture(scope="module")
def server():
    """The scripted model answers every turn `ok` and a Read call (as text when the request has no Read tool)."""
    codec = ConversationCodec(small_tokenizer())
    engine = Engine(scripted_model(tool_call_chain(codec), WIDE), min_bucket=8, max_bucket=64)
    with CompletionServer(engine, codec, model_name="nanocode-test", port=0, api_key=KEY) as server:
        yield server


def get(server, path, method="GET", headers=None):
    conn = http.client.HTTPConnection(*server.address, timeout=30)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def test_the_page_is_served_at_the_root_without_the_key(server):
    resp, body = get(server, "/")
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/html; charset=utf-8"
    page = body.decode()
    assert "<title>nanocode chat</title>" in page and "/v1/chat/completions" in page
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page  # the model's text is never parsed
    assert "http://" not in page and "https://" not in page  # self-contained: nothing from elsewhere (offline)
    policy = resp.getheader("Content-Security-Policy")
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "'unsafe-inline'" not in policy
    head, _ = get(server, "/", method="HEAD")
    assert head.status == 200 and head.getheader("Content-Length") == str(len(body))
    # The page is public; the API it calls is not.
    assert get(server, "/v1/models")[0].status == 401
    assert get(server, "/v1/models", headers={"Authorization": f"Bearer {KEY}"})[0].status == 200


# -- in a real browser ---------------------------------------------------------------------------------------------
def chromium():
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        pytest.skip("chromium and chromedriver are not installed: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console: script errors, CSP refusals
    # The driver is named, so selenium's driver manager never goes to the network.
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def send(driver, text, *, enter=False):
    """Type `text` and send it: by the Send button, or by pressing Enter in the box."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "input")
    box.send_keys(text)
    if enter:
        box.send_keys(Keys.ENTER)
    else:
        driver.find_element(By.ID, "send").click()


def wait_idle(driver):
    """Until the request is over: the page goes back to idle (a bounded wait)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script("return document.body.dataset.state") == "idle")


def messages(driver) -> list[tuple[str, str]]:
    """(class, text of .content) of every message box on the page."""
    script = """return [...document.querySelectorAll('#messages .msg')].map(
        m => [m.className.replace('msg ', ''), m.querySelector('.content').textContent])"""
    return [tuple(m) for m in driver.execute_script(script)]


def console_errors(driver) -> list[str]:
    """The console's errors, less the expected ones (the 401 asked for, no favicon)."""
    logs = driver.get_log("browser")
    return [e["message"] for e in logs if e["level"] == "SEVERE" and not any(s in e["message"] for s in EXPECTED)]


EXPECTED = ("favicon.ico", "status of 401")


def status(driver) -> str:
    return driver.execute_script("return document.getElementById('status').textContent")


@pytest.mark.slow
def test_a_conversation_streams_in_the_browser(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url + "/")
    WebDriverWait(browser, WAIT).until(lambda d: "nanocode-test" in d.find_element(By.ID, "model").text)

    # Without the key the server says 401: the page asks for it, opens its settings and gives the text back.
    send(browser, "hello")
    wait_idle(browser)
    assert "API key" in status(browser) and messages(browser) == []
    assert browser.find_element(By.ID, "settings").get_attribute("open") is not None
    assert browser.find_element(By.ID, "input").get_attribute("value") == "hello"
    browser.find_element(By.ID, "api-key").send_keys(KEY)
    browser.find_element(By.ID, "send").click()
    wait_idle(browser)
    assert browser.execute_script("return sessionStorage.getItem('nanocode_api_key')") == KEY

    # The reply streamed into the page; with no tools declared the model's Read call comes as text.
    (user, reply) = messages(browser)
    assert user == ("user", "hello")
    assert reply[0] == "assistant" and reply[1].startswith("ok") and "Read" in reply[1]
    assert status(browser) == ""

    # A second turn: the server got the whole conversation (it would refuse a malformed one).
    send(browser, "and again", enter=True)
    wait_idle(browser)
    assert [m[0] for m in messages(browser)] == ["user", "assistant", "user", "assistant"]
    assert messages(browser)[3][1].startswith("ok") and status(browser) == ""
    assert browser.execute_script("return chat.map(m => m.role)") == ["user", "assistant", "user", "assistant"]

    # New chat, with the Read tool declared: the call is a collapsible block, and the next message is its result.
    browser.find_element(By.ID, "new").click()
    assert messages(browser) == []
    browser.execute_script("document.getElementById('tools').value = arguments[0]", json.dumps([READ_TOOL]))
    send(browser, "read x.py")
    wait_idle(browser)
    assert messages(browser)[1] == ("assistant", "ok")
    blocks = browser.find_elements(By.CSS_SELECTOR, "#messages details.call")
    assert len(blocks) == 1 and blocks[0].get_attribute("open") is None  # collapsed
    assert blocks[0].find_element(By.TAG_NAME, "summary").text == "tool call: Read"
    assert json.loads(blocks[0].find_element(By.TAG_NAME, "pre").get_attribute("textContent")) == {"file": "x.py"}
    assert "result of Read" in browser.find_element(By.ID, "input").get_attribute("placeholder")
    send(browser, "print('x')")
    wait_idle(browser)
    assert [m[0] for m in messages(browser)] == ["user", "assistant", "tool", "assistant"]
    assert status(browser) == "" and messages(browser)[3] == ("assistant", "ok")
    sent = browser.execute_script("return chat")  # what the last request carried, and its reply
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant"]
    assert sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"] and sent[2]["content"] == "print('x')"
    assert console_errors(browser) == []  # the page's own script and style pass its Content-Security-Policy


@pytest.mark.slow
def test_stop_aborts_the_request_and_the_server_cancels_its_generation(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    codec = ConversationCodec(small_tokenizer())
    server = CompletionServer(Engine(tiny_model(TINY), min_bucket=8), codec, model_name="idle", port=0)
    server.start(start_worker=False)  # the request is queued and streams its first event; no token comes yet
    try:
        browser.get(server.url + "/")
        send(browser, "write a long story")
        WebDriverWait(browser, WAIT).until(lambda d: server.worker.queue.qsize() == 1)
        assert browser.execute_script("return document.body.dataset.state") == "streaming"
        assert messages(browser) == [("user", "write a long story"), ("assistant", "")]
        browser.find_element(By.ID, "stop").click()
        wait_idle(browser)
        assert "(stopped)" in browser.find_element(By.CSS_SELECTOR, ".msg.assistant .note").text
        (job,) = server.worker.queue.queue
        WebDriverWait(browser, WAIT).until(lambda d: job.cancelled.is_set())  # the server saw the hang-up
        server.worker.start()
        WebDriverWait(browser, WAIT).until(lambda d: server.worker.cancelled == 1)  # skipped, never generated
        assert status(browser) == ""
    finally:
        server.close()


@pytest.mark.slow
def test_the_models_markup_is_shown_as_text(server, browser):
    """Rendered through the page's own path (the stream's): tags stay text, no element is made, nothing runs."""
    browser.get(server.url + "/")
    hostile = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"><b>bold</b>'
    call = {"name": "<img src=x onerror='window.pwned = 3'>", "arguments": '{"a": "<script>x</script>"}'}
    browser.execute_script("window.nanocodeRender('assistant', arguments[0], [arguments[1]])", hostile, call)
    browser.execute_script("window.nanocodeRender('user', arguments[0])", hostile)
    assert [m[1] for m in messages(browser)] == [hostile, hostile]
    tags = browser.execute_script(
        "return [...document.querySelectorAll('#messages script, #messages img, #messages b')].length"
    )
    assert tags == 0
    summary = browser.execute_script("return document.querySelector('#messages details.call summary').textContent")
    assert summary == "tool call: " + call["name"]
    assert browser.execute_script("return window.pwned === undefined")
