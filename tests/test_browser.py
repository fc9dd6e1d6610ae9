"""Browser journeys: Playwright driving Debian's chromium against a live test server."""
import shutil

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context()
    pg = ctx.new_page()
    yield pg
    ctx.close()


def test_sign_up_log_in_and_reach_every_top_level_page(page, live_server):
    base = live_server.url
    page.goto(base + "/")
    assert "Model Factory" in page.title()
    page.click("text=Sign up")
    page.fill("input[name=username]", "walker")
    page.fill("input[name=email]", "walker@example.org")
    page.fill("input[name=password1]", "a-long-secret-42")
    page.fill("input[name=password2]", "a-long-secret-42")
    page.fill("input[name=wallet_address]", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Welcome, walker")
    # log out, then log in again
    page.click("text=Log out")
    page.click("text=Log in")
    page.fill("input[name=username]", "walker")
    page.fill("input[name=password]", "a-long-secret-42")
    page.click("button[type=submit]")
    page.wait_for_selector("a.user:has-text('walker')")
    for link, heading in [("Datanets", "Datanets"), ("Model Factory", "Model Factory"), ("Models", "Models"),
                          ("Ledger", "Ledger")]:
        page.click(f"nav >> text={link}")
        assert page.locator("h1").first.inner_text().startswith(heading)
    page.click("nav >> text=API docs")
    page.wait_for_selector("#swagger-ui")
    page.goto(base + "/accounts/profile/")
    assert page.input_value("input[name=wallet_address]") == "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def test_bad_login_shows_error(page, live_server):
    page.goto(live_server.url + "/accounts/login/")
    page.fill("input[name=username]", "nobody")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert "correct username and password" in page.content()
