"""The dashboard in a real browser: log in, search by phone, read the timeline, retry with its
confirm, and a viewer who sees masked data only. Screenshots of each step are kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.dashboard_helpers import ACCESS_TOKEN, BODY, PASSWORD, READ_WAMID


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def _log_in(page: Page, dashboard: str, name: str) -> None:
    page.goto(dashboard + "/")
    expect(page).to_have_url(dashboard + "/login")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Find a message")).to_be_visible()


def test_support_finds_a_message_by_phone_and_reads_its_timeline(
    page: Page, dashboard: str, rows: dict[str, int], screenshots: Path
) -> None:
    _log_in(page, dashboard, "support")
    page.get_by_role("searchbox").fill("+92 300-123 4567")
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#results")).to_contain_text("booking-1234")
    page.screenshot(path=screenshots / "support-search-by-phone.png", full_page=True)
    page.get_by_role("link", name=str(rows["read"]), exact=True).click()
    expect(page.locator("#answer")).to_have_text(
        "Delivered to +92 300 1234567 at 14:02, read at 14:05"
    )
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("webhook: read")
    expect(timeline).to_contain_text(READ_WAMID)
    expect(page.locator("#payload")).to_contain_text(BODY)
    page.screenshot(path=screenshots / "support-timeline.png", full_page=True)


def test_support_retries_a_failed_message_after_confirming(
    page: Page, dashboard: str, rows: dict[str, int], screenshots: Path
) -> None:
    _log_in(page, dashboard, "support")
    page.goto(f"{dashboard}/messages/{rows['failed']}")
    expect(page.locator("#explanation")).to_contain_text("the guest has not written in 24 h")
    page.locator("#retry").click()
    expect(page.get_by_role("heading", name=f"Retry message {rows['failed']}?")).to_be_visible()
    page.screenshot(path=screenshots / "support-retry-confirm.png", full_page=True)
    page.get_by_role("button", name="Yes, retry it").click()
    expect(page.get_by_role("status")).to_contain_text("Queued again")
    expect(page.locator("#answer")).to_contain_text("Waiting to be sent to +92 300 1234567")
    page.screenshot(path=screenshots / "support-retried.png", full_page=True)


def test_a_viewer_sees_masked_data_only(
    page: Page, dashboard: str, rows: dict[str, int], screenshots: Path
) -> None:
    _log_in(page, dashboard, "viewer")
    page.goto(f"{dashboard}/messages/{rows['read']}")
    expect(page.locator("#answer")).to_have_text("Delivered to +92 ***4567 at 14:02, read at 14:05")
    expect(page.locator("#payload")).to_contain_text(f"(hidden: {len(BODY)} characters)")
    text = page.locator("body").inner_text()
    assert BODY not in text
    assert "300 1234567" not in text
    assert ACCESS_TOKEN not in page.content()
    page.screenshot(path=screenshots / "viewer-masked.png", full_page=True)
    page.goto(f"{dashboard}/messages/{rows['failed']}")
    expect(page.locator("#answer")).to_be_visible()
    expect(page.locator("#retry")).to_have_count(0)


def test_an_admin_retries_every_message_a_filter_matches_from_operate(
    page: Page, dashboard: str, rows: dict[str, int], screenshots: Path
) -> None:
    _log_in(page, dashboard, "admin")
    page.get_by_role("link", name="Operate").click()
    expect(page.get_by_role("heading", name="Operate")).to_be_visible()
    expect(page.locator("#sends-chart svg")).to_be_visible()
    page.screenshot(path=screenshots / "admin-operate.png", full_page=True)
    page.get_by_role("textbox", name="Graph code").fill("131047")
    page.get_by_role("button", name="Count what matches…").click()
    expect(page.locator("#bulk-count")).to_have_text(
        "Retry 1 failed messages with error code 131047?"
    )
    page.screenshot(path=screenshots / "admin-bulk-confirm.png", full_page=True)
    page.get_by_role("button", name="Yes, retry 1 message(s)").click()
    expect(page.get_by_role("status")).to_have_text("Retried 1 message(s).")
    expect(page.locator("#actions")).to_contain_text("retried 1 failed messages")
