"""The studio in a real browser (Debian chromium through Playwright): press Start on the defaults,
watch the loss chart grow, pause, resume, stop, find the run and its checkpoints, and see a
failure's message and traceback in the page.

Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from browser_support import BROWSER_MARKS, TIMEOUT_MS, VIEWPORT, screenshot
from conftest import launched_studio

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def studio_url(tmp_path_factory):
    with launched_studio(tmp_path_factory.mktemp("ui-browser")) as (app, _):
        yield app.local_url


def loss_line_length(page) -> int:
    """How much line the chart has drawn: the summed path data of its line marks."""
    return page.evaluate("""() => [...document.querySelectorAll('#loss-chart path')]
        .map(p => (p.getAttribute('d') || '').length).reduce((a, b) => a + b, 0)""")


def current_step(page) -> int:
    return int(page.get_by_role("progressbar", name="Training progress").get_attribute("aria-valuenow"))


def test_start_on_the_defaults_pause_resume_stop_and_find_the_checkpoint(studio_url, browser):
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(studio_url)
    page.get_by_role("tab", name="Train").click()
    start = page.get_by_role("button", name="Start", exact=True)
    pause = page.get_by_role("button", name="Pause", exact=True)
    resume = page.get_by_role("button", name="Resume", exact=True)
    stop = page.get_by_role("button", name="Stop", exact=True)
    header = page.locator("#header-job")
    expect(page.get_by_label("Preset")).to_have_value("tiny-demo")
    expect(pause).to_be_disabled()
    expect(page.get_by_label("Run name")).to_have_value(re.compile(r"^tiny-demo-\d{8}-\d{4}"))

    # 1. Start on the defaults (only longer, so that the test rather than the run's end decides when it
    #    stops): the chart draws and grows.
    page.get_by_label("train.max_steps").fill("4000")
    page.get_by_label("train.max_steps").press("Tab")
    start.click()
    expect(page.locator("#notice")).to_contain_text("Started run")
    expect(header).to_contain_text("Training", timeout=TIMEOUT_MS)
    run_name = page.locator("#job .job-extra").inner_text()
    assert run_name.startswith("tiny-demo-")
    expect(start).to_be_disabled()
    page.wait_for_function("() => document.querySelectorAll('#loss-chart path').length > 0", timeout=TIMEOUT_MS)
    first = loss_line_length(page)
    page.wait_for_function(f"""() => [...document.querySelectorAll('#loss-chart path')]
        .map(p => (p.getAttribute('d') || '').length).reduce((a, b) => a + b, 0) > {first}""", timeout=TIMEOUT_MS)
    # the header and the panel come over the live feed (not Gradio's queue): both show its latest snapshot
    page.wait_for_function("""() => { const feed = window.studioLiveFeed, mark = feed && feed.latest
            && `<!--v${feed.latest.version}-->`;
        return feed && feed.messages >= 3 && ['#header-job', '#job'].every(
            id => document.querySelector(id).innerHTML.includes(mark)); }""", timeout=TIMEOUT_MS)

    # 2. Another browser tab shows the same job, and a reload re-attaches.
    other = browser.new_page(viewport=VIEWPORT)
    other.goto(studio_url)
    expect(other.locator("#header-job")).to_contain_text(run_name, timeout=TIMEOUT_MS)
    other.reload()  # a page opened while a job runs lands on the Train tab
    expect(other.get_by_role("tab", name="Train")).to_have_attribute("aria-selected", "true", timeout=TIMEOUT_MS)
    expect(other.locator("#job")).to_contain_text(run_name, timeout=TIMEOUT_MS)
    expect(other.get_by_role("button", name="Stop", exact=True)).to_be_enabled()
    other.close()

    # 3. Pause holds the step; Resume continues.
    pause.click()
    expect(header).to_contain_text("Paused", timeout=TIMEOUT_MS)
    expect(resume).to_be_enabled()
    held = current_step(page)
    page.wait_for_timeout(1500)
    assert current_step(page) == held
    resume.click()
    expect(header).to_contain_text("Training", timeout=TIMEOUT_MS)

    # 4. The first samples arrive (tiny-demo samples every 100 steps).
    expect(page.locator("#latest-samples")).to_contain_text(re.compile(r"step [1-9]\d*00\b"), timeout=TIMEOUT_MS)
    expect(header).to_contain_text("Training", timeout=TIMEOUT_MS)
    page.wait_for_function("""() => { const imgs = [...document.querySelectorAll('#latest-samples img')];
        return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }""", timeout=TIMEOUT_MS)
    screenshot(page, "train-running")

    # 5. Stop saves a checkpoint.
    stop.click()
    expect(header).to_contain_text("Stopped", timeout=TIMEOUT_MS)
    expect(start).to_be_enabled()
    stopped_at = current_step(page)

    # 6. The run and its checkpoints are under Checkpoints.
    page.get_by_role("tab", name="Checkpoints").click()
    runs = page.get_by_role("grid", name="Runs")
    expect(runs.get_by_role("gridcell", name=run_name, exact=True)).to_be_visible(timeout=TIMEOUT_MS)
    expect(runs.get_by_role("row", name=re.compile(f"^{run_name} stopped"))).to_be_visible()
    checkpoints = page.get_by_role("grid", name="Checkpoints")
    expect(checkpoints).to_contain_text(f"{run_name}-step{stopped_at:06d}.safetensors", timeout=TIMEOUT_MS)
    expect(checkpoints).to_contain_text(f"{run_name}-step000100.safetensors")
    expect(page.get_by_text(f"latest checkpoint (step {stopped_at})", exact=False)).to_be_visible()
    screenshot(page, "checkpoints")

    # 7. Delete the older checkpoint, after confirming.
    page.get_by_label("Checkpoint", exact=True).click()
    page.get_by_role("option", name="100", exact=True).click()
    page.get_by_role("button", name="Delete checkpoint…").click()
    expect(page.get_by_text(f"Delete checkpoint step 100 of {run_name}?")).to_be_visible()
    page.get_by_role("button", name="Yes, delete").click()
    expect(page.locator("#notice")).to_contain_text("Deleted checkpoint step 100")
    expect(checkpoints).not_to_contain_text("step000100.safetensors")

    # 8. Resume continues from the latest checkpoint, back on the Train tab.
    page.get_by_role("button", name="Resume training").click()
    expect(page.get_by_role("tab", name="Train")).to_have_attribute("aria-selected", "true")
    expect(header).to_contain_text("Training", timeout=TIMEOUT_MS)
    assert current_step(page) >= stopped_at
    stop.click()
    expect(header).to_contain_text("Stopped", timeout=TIMEOUT_MS)
    page.close()


def test_a_failed_run_shows_its_error_and_traceback_in_the_page(studio_url, browser):
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(studio_url)
    page.get_by_role("tab", name="Train").click()
    rank = page.get_by_label("lora.rank")
    rank.fill("0")
    rank.press("Tab")
    # an invalid form: Start is disabled, and the line beside it says why in the form's words
    expect(page.locator("#config-check")).to_contain_text("✗ Rank must be at least 1 (lora.rank).")
    expect(page.get_by_role("button", name="Start", exact=True)).to_be_disabled()
    # a refused action is one line in the notice area, its details collapsed, and no "Error" badges
    page.get_by_role("button", name="Test setup").click()
    notice = page.locator("#notice")
    expect(notice).to_contain_text("⚠️ Cannot test: Rank must be at least 1 (lora.rank).")
    expect(notice.locator("details summary")).to_have_text("Details")
    expect(notice.locator("details pre")).to_be_hidden()  # collapsed until asked for
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)
    rank.fill("4")
    rank.press("Tab")
    expect(page.locator("#config-check")).to_contain_text("✓ Valid config")
    expect(page.get_by_role("button", name="Start", exact=True)).to_be_enabled()
    dataset = page.get_by_label("data.dir")
    dataset.fill("empty")
    dataset.press("Enter")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(notice).to_contain_text("Started run", timeout=TIMEOUT_MS)
    expect(notice.locator("strong")).to_have_count(1)  # "Started run **name**": Markdown, rendered
    alert = page.get_by_role("alert").filter(has_text="Training failed")
    expect(alert).to_contain_text("no images found", timeout=TIMEOUT_MS)
    expect(page.locator("#header-job")).to_contain_text("Failed")
    page.get_by_role("button", name="Traceback").click()
    expect(page.get_by_text("Traceback (most recent call last)")).to_be_visible()
    expect(page.get_by_role("button", name="Start", exact=True)).to_be_enabled()
    screenshot(page, "train-failed")
    page.close()
