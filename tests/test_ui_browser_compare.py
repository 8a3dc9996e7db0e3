"""The Compare and Score tabs in a real browser (Debian chromium through Playwright), on a finished
tiny run: a 1-prompt × 2-seed × (prompt only, final LoRA) grid shows 4 images, goes to Score, and
scoring it with the tiny random backbones puts numbers in the Score table under a banner that says
they mean nothing.

Screenshots go to test-artifacts/ (git-ignored); with UPDATE_SCREENSHOTS=1 the README's
docs/screenshots/compare.png and score.png are rewritten too.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from browser_support import BROWSER_MARKS, TIMEOUT_MS, VIEWPORT, field, screenshot
from conftest import launched_studio, train_tiny_run

pytestmark = BROWSER_MARKS
RUN = "robot-lora"
PROMPT = "a photo of {trigger} toy robot"


@pytest.fixture(scope="module")
def studio_url(tmp_path_factory):
    base = tmp_path_factory.mktemp("ui-browser-compare")
    train_tiny_run(base / "outputs", RUN)
    with launched_studio(base) as (app, _):
        yield app.local_url


def pick(page, label: str, option: str | re.Pattern) -> None:
    """Choose an option of the visible dropdown labelled `label`."""
    page.get_by_label(label, exact=True).filter(visible=True).click()
    page.get_by_role("option", name=option).click()


def test_grid_of_prompt_only_against_the_lora_then_score_it(studio_url, browser):
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(studio_url)
    page.get_by_role("tab", name="Compare").click()

    # 1. The finished run is picked and its defaults filled in: prompt only and the final LoRA.
    expect(page.get_by_label("Run", exact=True).filter(visible=True)).to_have_value(RUN, timeout=TIMEOUT_MS)
    # Wait for the run's defaults before typing over them, or they would overwrite what was typed.
    expect(page.locator("#compare-checkpoints")).to_contain_text("final", timeout=TIMEOUT_MS)
    expect(field(page, "Prompts")).to_have_value(re.compile(r"\{trigger\}"), timeout=TIMEOUT_MS)
    expect(field(page, "Prompt only")).to_be_checked()
    field(page, "Prompts").fill(PROMPT)
    field(page, "Seeds").fill("1,2")
    page.get_by_role("button", name="Advanced").click()
    steps = page.get_by_label("Inference steps", exact=True)
    steps.fill("2")
    steps.press("Tab")

    # 2. Make grid: 4 images (2 rows × 2 columns), the before/after slider and the labelled grid.
    page.get_by_role("button", name="Make grid").click()
    expect(page.locator("#notice")).to_contain_text("Made grid", timeout=TIMEOUT_MS)
    thumbnails = page.locator("#grid-gallery .thumbnail-item img")
    expect(thumbnails).to_have_count(4, timeout=TIMEOUT_MS)
    page.wait_for_function("""() => { const imgs = [...document.querySelectorAll('#grid-gallery .thumbnail-item img')];
        return imgs.length === 4 && imgs.every(i => i.complete && i.naturalWidth > 0); }""", timeout=TIMEOUT_MS)
    expect(page.locator("#grid-summary")).to_contain_text("2 rows (prompt × seed) × 2 columns, 4 images")
    expect(page.locator("#grid-slider")).to_contain_text("prompt only ⟷ final · ×1")
    expect(page.get_by_role("button", name="Download grid.png")).to_be_visible()
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "compare", "compare.png")

    # 3. Send to Score: the Score tab opens on this run and grid, not scored yet.
    page.get_by_role("button", name="Send to Score").click()
    expect(page.get_by_role("tab", name="Score")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#score-summary")).to_contain_text("is not scored yet", timeout=TIMEOUT_MS)
    expect(page.get_by_label("Grid", exact=True)).to_have_value(re.compile(r"^grid-\d{8}-\d{6}"))

    # 4. Score with the tiny random backbones: numbers in the table, named backbones, the banner.
    pick(page, "CLIP backbone", re.compile(r"^tiny-random — tiny built-in CLIP"))
    pick(page, "DINO backbone", re.compile(r"^tiny-random — tiny built-in ViT"))
    page.get_by_role("button", name="Score", exact=True).click()
    table = page.get_by_role("grid", name="Scores per column")
    expect(table).to_contain_text("CLIP-I (tiny-random)", timeout=TIMEOUT_MS)
    expect(table).to_contain_text("prompt only (baseline)")
    expect(table.get_by_role("row", name=re.compile(r"^final · ×1 "))).to_contain_text(re.compile(r"-?0\.\d{3}"))
    expect(page.locator("#score-banner")).to_contain_text("random weights — these numbers mean nothing")
    expect(page.locator("#score-recommendation")).to_contain_text("Recommended: final · ×1")
    page.wait_for_function("() => document.querySelectorAll('#score-chart svg path, #score-chart svg symbol, "
                           "#score-chart canvas').length > 0", timeout=TIMEOUT_MS)
    screenshot(page, "score", "score.png")
    page.close()
