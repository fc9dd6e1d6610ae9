"""The curator console in the browser: a curator opens the review queue of a Datanet, sees the previews and
the near-duplicate and label hints, rejects two uploads in bulk (the form insists on a reason), accepts
another, and finds every decision in the audit trail; the contributor then deletes a failed upload."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from datanets import services
from datanets.models import Contribution
from datanets.tests.factories import DatanetFactory, contributor, curator_of
from tests.test_browser import browser, page  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "correct-horse-battery"  # accounts.tests.factories.UserFactory


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def _login(page, base, user):  # noqa: F811
    page.goto(base + "/accounts/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector(f"a.user:has-text('{user.username}')")


def _upload(datanet, user, name, body: bytes):
    result = services.contribution_upload(datanet=datanet, contributor=user, file=SimpleUploadedFile(name, body),
                                          file_name=name, inline=True)
    return result.contribution


def test_curator_reviews_in_bulk_and_the_trail_records_it(page, live_server):  # noqa: F811
    datanet = DatanetFactory(name="Market news", slug="market-news", labels=["positive", "negative", "neutral"])
    cur = curator_of(datanet, "carla")
    alice, bob = contributor("alice"), contributor("bob")
    good = _upload(datanet, alice, "good.csv", b"label,text\npositive,Profit rose.\nnegative,Sales fell.\nneutral,Board met.\n")
    copy = _upload(datanet, bob, "copy.csv", b"label,text\npositive,Profit rose strongly this year.\n"
                                             b"positive,Profit rose strongly this year again.\npositive,Orders doubled.\n")
    spam = _upload(datanet, bob, "spam.csv", b"label,text\nneutral,Buy cheap watches now.\n")
    failed = _upload(datanet, bob, "bad.csv", b"label,text\nbullish,x\n")
    base = live_server.url

    _login(page, base, cur)
    page.click("nav >> text=Curation")
    page.click("text=Market news")
    assert page.locator("h1").inner_text() == "Review: Market news"
    card = page.locator(f"#contribution-{copy.id}")
    assert "Profit rose strongly this year." in card.inner_text()  # record preview
    assert card.locator(".near-dup-hint").inner_text().startswith("1 near-duplicate(s)")  # a twin in the file
    assert card.locator(".label-hint").inner_text() == "one label dominates this upload"
    assert "bad.csv" in page.locator("#not-ready").inner_text()

    # Reject two at once: without a reason the page says why and nothing changes.
    page.check(f"input[name=ids][value='{copy.id}']")
    page.check(f"input[name=ids][value='{spam.id}']")
    page.click("button:has-text('Reject selected')")
    page.wait_for_selector("text=A rejection needs a reason")
    assert Contribution.objects.filter(status="pending").count() == 4
    page.check(f"input[name=ids][value='{copy.id}']")
    page.check(f"input[name=ids][value='{spam.id}']")
    page.fill("textarea[name=reason]", "copied or off-topic")
    page.click("button:has-text('Reject selected')")
    page.wait_for_selector("text=2 contribution(s) rejected")
    page.check(f"input[name=ids][value='{good.id}']")
    page.click("button:has-text('Accept selected')")
    page.wait_for_selector("text=1 contribution(s) accepted")
    assert page.locator("#queue-empty").is_visible()
    trail = page.locator("#audit").inner_text()
    assert trail.count("copied or off-topic") == 2 and "good.csv" in trail and "Accepted" in trail
    assert {c.pk: c.status for c in Contribution.objects.exclude(pk=failed.pk)} == {
        good.id: "accepted", copy.id: "rejected", spam.id: "rejected"}

    # The contributor deletes the failed upload from its page.
    page.click("text=Log out")
    _login(page, base, bob)
    page.goto(f"{base}/datanets/contributions/{failed.id}/")
    page.click("button:has-text('Delete this failed upload')")
    page.wait_for_selector("text=withdrawn and deleted")
    assert not Contribution.objects.filter(pk=failed.id).exists()


def test_a_non_curator_gets_a_styled_403(page, live_server):  # noqa: F811
    datanet = DatanetFactory(name="Closed", slug="closed")
    alice = contributor("alice")
    _login(page, live_server.url, alice)
    resp = page.goto(f"{live_server.url}/datanets/{datanet.slug}/review/")
    assert resp.status == 403
    assert page.locator("h1").inner_text() == "Not allowed" and "not a curator" in page.content()
