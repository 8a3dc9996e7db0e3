"""The Compare and Score tabs in a real browser (Debian chromium through Playwright), on a finished
tiny run: a 1-prompt × 2-seed × (prompt only, final LoRA) grid shows 4 images, goes to Score, and
scoring it with the tiny random backbones puts numbers in the Score table under a banner that says
they mean nothing. Then the seeds' questions: a baseline prompt and another generator's uploaded
images in one grid with consistency in the scorecard, and a generated batch scored with FID / KID.

Screenshots go to test-artifacts/ (git-ignored).
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
    screenshot(page, "compare")

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
    expect(page.locator("#score-legend .legend-chip")).to_have_text(["prompt only (baseline)", "final · ×1"])
    screenshot(page, "score")
    page.close()


def test_baseline_prompt_other_generator_and_a_scored_batch(studio_url, browser, tmp_path):
    from PIL import Image

    files = []
    for i, colour in enumerate([(240, 120, 20), (20, 120, 240)]):
        files.append(tmp_path / f"freepik-{i + 1}.png")
        Image.new("RGB", (96, 96), colour).save(files[-1])
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(studio_url)
    page.get_by_role("tab", name="Compare").click()
    expect(page.locator("#compare-checkpoints")).to_contain_text("final", timeout=TIMEOUT_MS)
    expect(field(page, "Prompts")).to_have_value(re.compile(r"\{trigger\}"), timeout=TIMEOUT_MS)

    # 1. The seed's comparison: a long baseline prompt without the LoRA, the LoRA, and Freepik's images.
    field(page, "Prompts").fill(PROMPT)
    field(page, "Seeds").fill("1,2")
    field(page, "Baseline prompts").fill("a small silver toy robot with round eyes")
    page.get_by_role("button", name="Add images from another generator").click()
    field(page, "Generator").fill("Freepik")
    page.locator("#compare-external-files input[type=file]").set_input_files([str(f) for f in files])
    # uploaded: Gradio lists each file as "stem .ext"
    expect(page.locator("#compare-external-files")).to_contain_text("freepik-2", timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Add column").click()
    expect(page.locator("#compare-external")).to_contain_text("Freepik: 2 files", timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Advanced").click()
    steps = page.get_by_label("Inference steps", exact=True)
    steps.fill("2")
    steps.press("Tab")
    page.get_by_role("button", name="Make grid").click()
    expect(page.locator("#grid-summary")).to_contain_text("other generators: Freepik", timeout=TIMEOUT_MS)
    expect(page.locator("#grid-summary")).to_contain_text("2 rows (prompt × seed) × 3 columns")

    # 2. Scored: consistency for every column, the external one marked.
    page.get_by_role("button", name="Send to Score").click()
    expect(page.locator("#score-summary")).to_contain_text("is not scored yet", timeout=TIMEOUT_MS)
    pick(page, "CLIP backbone", re.compile(r"^tiny-random — tiny built-in CLIP"))
    pick(page, "DINO backbone", re.compile(r"^tiny-random — tiny built-in ViT"))
    page.get_by_role("button", name="Score", exact=True).click()
    table = page.get_by_role("grid", name="Scores per column")
    expect(table).to_contain_text("Freepik (external)", timeout=TIMEOUT_MS)
    expect(table).to_contain_text("Consistent")
    expect(table.get_by_role("row", name=re.compile(r"^baseline prompt "))).to_contain_text(re.compile(r"\d+ %"))
    expect(page.locator("#score-summary")).to_contain_text("lowest leave-one-out DINO")

    # 3. A batch of the LoRA, captioned, then scored as a distribution.
    page.get_by_role("tab", name="Compare").click()
    page.get_by_role("button", name="Batch generation").click()
    images = page.get_by_label("Images", exact=True)
    images.fill("3")
    images.press("Tab")  # committed before Generate reads it, as for every number typed in these tests
    expect(images).to_have_value("3")
    field(page, "Batch name").fill("synthetic")
    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.locator("#batch-status")).to_contain_text("Wrote 3 images", timeout=TIMEOUT_MS)
    expect(page.locator("#batch-status")).to_contain_text("metadata.jsonl")
    page.get_by_role("button", name="Score this batch").click()
    expect(page.get_by_role("tab", name="Score")).to_have_attribute("aria-selected", "true", timeout=TIMEOUT_MS)
    expect(page.locator("#batch-score-summary")).to_contain_text("synthetic is not scored yet", timeout=TIMEOUT_MS)
    pick(page, "CLIP backbone", re.compile(r"^tiny-random — tiny built-in CLIP"))
    pick(page, "DINO backbone", re.compile(r"^tiny-random — tiny built-in ViT"))
    pick(page, "Inception backbone", re.compile(r"^tiny-random — the same network"))
    page.get_by_role("button", name="Score batch").click()
    metrics = page.get_by_role("grid", name="Batch metrics")
    expect(metrics).to_contain_text("FID", timeout=TIMEOUT_MS)
    expect(metrics.get_by_role("row", name=re.compile(r"^KID "))).to_contain_text(re.compile(r"\d\.\d{4} ± "))
    expect(metrics).to_contain_text("N = 3 vs 16 refs")
    expect(page.locator("#batch-score-summary")).to_contain_text("random weights")
    page.close()
