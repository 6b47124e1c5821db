"""The share pages and the gallery: their HTML and link-preview tags, their errors, and the pages in a real browser."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from conftest import image_files, png_size
from fakes import image_bytes
from models import Achievement
from serving import REPO, running, server_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = REPO / "tests" / "screenshots"  # git-ignored
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
CARD_TAGS = {"og:title", "og:description", "og:image", "og:url", "twitter:card"}


class Page(HTMLParser):
    """What a page declares and loads: its meta tags, image sources, headings, and any script or style sheet."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self.images: list[dict[str, str]] = []
        self.headings: list[str] = []
        self.loads: list[str] = []
        self.lang = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = {key: value or "" for key, value in attrs}
        if tag == "html":
            self.lang = attributes.get("lang")
        if tag == "meta" and ("property" in attributes or "name" in attributes):
            self.meta[attributes.get("property") or attributes["name"]] = attributes.get("content", "")
        if tag == "img":
            self.images.append(attributes)
        if tag in ("h1", "h2"):
            self.headings.append(tag)
        if tag == "script" or (tag == "link" and attributes.get("rel") == "stylesheet"):
            self.loads.append(tag)


@pytest.fixture
def site(client, users):
    """Two badges (user 1 holds achievements 1 and 2), a storefront, and achievement 3 that nobody holds."""
    assert client.post("/seedrandom", json={"users": 0, "achievements": 3, "storefronts": 1}).status_code == 201
    assert client.post("/assign-achievements-to-user", json={"user_id": 1, "achievement_list": [1, 2]}).status_code \
        == 200
    return client


def test_share_page_has_the_badge_its_words_and_a_card(site):
    response = site.get("/share/1/1", headers=BROWSER)
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = Page(response.get_data(as_text=True))
    achievement = site.get("/view-all-achievement").get_json()["achievements"][0]
    html = response.get_data(as_text=True)
    for words in (achievement["name"], achievement["occasion"]):
        assert words.replace("'", "&#39;") in html
    assert "This badge verifies" in html
    assert CARD_TAGS <= set(page.meta) and page.meta["twitter:card"] == "summary_large_image"
    assert page.meta["og:url"] == "http://localhost/share/1/1"
    assert page.meta["og:title"].startswith(achievement["name"])
    image = urlsplit(page.meta["og:image"])
    assert (image.scheme, image.netloc) == ("http", "localhost") and image.path.startswith("/images/")
    card = site.get(image.path)
    assert card.status_code == 200 and card.mimetype == "image/png"
    assert png_size(card.data) == (1200, 630) == (int(page.meta["og:image:width"]), int(page.meta["og:image:height"]))
    assert page.lang == "en" and page.headings[0] == "h1" and "viewport" in page.meta
    assert page.images and all(img.get("alt") for img in page.images)
    assert page.loads == []  # no script, no style sheet: styles are inline
    assert "script-src" not in response.headers["Content-Security-Policy"]  # so no script may run at all


def test_the_share_card_is_drawn_once_and_stored_like_any_image(site, app):
    """The first request draws and stores the card; the next ones find it: one file, the same URL."""
    first = Page(site.get("/share/1/1").get_data(as_text=True)).meta["og:image"]
    files = image_files(app)
    second = Page(site.get("/share/1/1").get_data(as_text=True)).meta["og:image"]
    assert second == first and image_files(app) == files
    sha256 = urlsplit(first).path.removeprefix("/images/").removesuffix(".png")
    assert any(path.name == f"{sha256}.png" for path in files)
    with app.extensions["sessionmaker"]() as session:
        assert session.get(Achievement, 1).share_card_sha256 == sha256
    # Another badge has a card of its own; another holder of the same badge shares its card.
    assert Page(site.get("/share/1/2").get_data(as_text=True)).meta["og:image"] != first
    assert site.post("/add-achievement", json={"user_id": 2, "achievement_id": 1}).status_code == 201
    assert Page(site.get("/share/2/1").get_data(as_text=True)).meta["og:image"] == first


def test_the_share_card_of_a_wide_badge_made_before(site, app):
    """Badges drawn 1344x576 before badges were square get a card of the same size, the badge fitted in."""
    with app.extensions["sessionmaker"]() as session, app.extensions["image_store"].saving(session) as put:
        achievement = session.get(Achievement, 2)
        for name, value in put(image_bytes((1344, 576))).columns().items():
            setattr(achievement, name, value)
    card = site.get(urlsplit(Page(site.get("/share/1/2").get_data(as_text=True)).meta["og:image"]).path)
    assert png_size(card.data) == (1200, 630)


def test_share_page_of_a_revoked_badge_is_gone(site):
    assert site.post("/assign-achievements-to-user", json={"user_id": 1, "achievement_list": [1]}).status_code == 200
    as_browser = site.get("/share/1/2", headers=BROWSER)
    assert as_browser.status_code == 404 and as_browser.mimetype == "text/html"
    assert "credential_not_found" in as_browser.get_data(as_text=True)
    as_api = site.get("/share/1/2")
    assert as_api.status_code == 404 and as_api.get_json()["code"] == "credential_not_found"
    for path, code in [("/share/1/3", "credential_not_found"), ("/share/9/1", "user_not_found")]:
        assert site.get(path).get_json()["code"] == code
    bad = site.get("/share/x/1", headers=BROWSER)
    assert bad.status_code == 400 and bad.mimetype == "text/html"


def test_gallery_shows_the_latest_badges_and_storefronts_paged(site, app):
    page = Page(site.get("/gallery", headers=BROWSER).get_data(as_text=True))
    sources = [img["src"] for img in page.images]
    assert sources[:2] == ["/users/1/achievements/2/badge.png", "/users/1/achievements/1/badge.png"]
    assert len(sources) == 3 and sources[2].startswith("/download-user-storefront-image?")
    for source in sources:
        assert site.get(source).status_code == 200, source
    assert CARD_TAGS <= set(page.meta)
    empty = site.get("/gallery?page=2", headers=BROWSER)
    assert empty.status_code == 200 and "No badges on this page" in empty.get_data(as_text=True)
    refused = site.get("/gallery?page=0")
    assert refused.status_code == 400 and refused.get_json()["field"] == "page"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`python main.py` on SQLite with a storefront and two badges of user 1, for the browser."""
    folder = tmp_path_factory.mktemp("pages")
    with running(server_env(folder, f"sqlite:///{folder / 'app.db'}"), folder) as server:
        for path, body in [("/seed-specific", None), ("/seedrandom", {"users": 0, "achievements": 3, "storefronts": 2}),
                           ("/assign-achievements-to-user", {"user_id": 1, "achievement_list": [1, 2]})]:
            assert requests.post(server.url(path), json=body, timeout=60).ok, server.tail()
        yield server


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def broken_images(page) -> list[str]:
    return page.eval_on_selector_all("img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0))"
                                            ".map(i => i.src)")


@pytest.mark.parametrize("viewport", [{"width": 1200, "height": 860}, {"width": 390, "height": 844}],
                         ids=["desktop", "phone"])
def test_pages_in_chromium(served, browser, viewport):
    SCREENSHOTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport=viewport, java_script_enabled=False)
    failed, requested = [], []
    context.on("requestfailed", lambda request: failed.append(request.url))
    context.on("request", lambda request: requested.append(request.url))
    try:
        page = context.new_page()
        answer = page.goto(served.url("/share/1/1"), wait_until="load")
        assert answer.status == 200
        assert page.locator("h1").inner_text()
        assert page.locator("text=This badge verifies").count() == 1
        assert broken_images(page) == [] and page.locator("img").count() == 1
        tags = {name: page.locator(f'meta[property="{name}"], meta[name="{name}"]').get_attribute("content")
                for name in CARD_TAGS}
        assert tags["og:image"].startswith(served.url("/images/"))
        assert tags["twitter:card"] == "summary_large_image"
        # Readable on a phone: nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        page.screenshot(path=str(SCREENSHOTS / f"share-{viewport['width']}.png"), full_page=True)

        answer = page.goto(served.url("/gallery"), wait_until="load")
        assert answer.status == 200
        assert page.locator("img").count() == 4 and broken_images(page) == []
        page.screenshot(path=str(SCREENSHOTS / f"gallery-{viewport['width']}.png"), full_page=True)
        assert failed == []
        assert {urlsplit(url).netloc for url in requested} == {urlsplit(served.base_url).netloc}  # nothing elsewhere
    finally:
        context.close()


def test_docs_work_in_chromium_under_their_content_security_policy(served, browser):
    """Swagger UI renders and "Try it out" calls the service, with a policy that lets no other script run."""
    context = browser.new_context()
    console, requested = [], []
    context.on("console", lambda message: console.append(message.text))
    context.on("request", lambda request: requested.append(request.url))
    try:
        page = context.new_page()
        answer = page.goto(served.url("/docs"), wait_until="load")
        policy = answer.headers["content-security-policy"]
        assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
        page.wait_for_selector(".opblock", timeout=30_000)
        assert page.locator(".opblock").count() >= 30
        health = page.locator(".opblock-get").filter(has_text="/healthz").first
        health.locator(".opblock-summary").click()
        health.locator("button.try-out__btn").click()
        health.locator("button.execute").click()
        page.wait_for_selector(".live-responses-table .response .response-col_status", timeout=30_000)
        assert health.locator(".live-responses-table .response .response-col_status").first.inner_text() == "200"
        assert [text for text in console if "Content Security Policy" in text] == []
        assert {urlsplit(url).netloc for url in requested} == {urlsplit(served.base_url).netloc}
    finally:
        context.close()


def test_html_pages_send_a_strict_policy_and_no_frames_or_sniffing(site):
    for path in ("/share/1/1", "/gallery", "/share/1/3", "/docs"):
        response = site.get(path, headers=BROWSER)
        assert response.mimetype == "text/html", path
        policy = [part.strip() for part in response.headers["Content-Security-Policy"].split(";")]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, path
        assert not any("*" in part or "http" in part or "unsafe" in part for part in policy), path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin", path
        assert response.headers["X-Frame-Options"] == "DENY", path
