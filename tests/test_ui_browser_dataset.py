"""The Dataset tab in a real browser (Debian chromium through Playwright): open the demo, click an
image, edit its caption, save, and find the new text in the file on disk; a bulk edit and its
undo with Save still in view; then send the dataset to the Train tab, which a reload remembers.

Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from browser_support import BROWSER_MARKS, screenshot
from conftest import launched_studio

pytestmark = BROWSER_MARKS
VIEWPORT = {"width": 1440, "height": 900}  # a laptop: the bulk edits are below the fold, the action bar is not
TIMEOUT_MS = 60_000
NEW_CAPTION = "ohwx toy robot, waving hello, on a blue background"


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    with launched_studio(tmp_path_factory.mktemp("ui-browser-dataset")) as (app, studio):
        yield app.local_url, studio


def test_open_the_demo_edit_a_caption_save_and_send_to_train(studio, browser):
    url, server = studio
    sidecar = server.roots.datasets / "demo" / "robot_03.txt"
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url)
    page.get_by_role("tab", name="Dataset").click()
    status = page.locator("#dataset-status")

    # 1. Open the demo: a copy lands in the datasets root and its 16 thumbnails show.
    page.get_by_role("button", name="Open the demo").click()
    expect(page.get_by_role("button", name="Thumbnail 16 of 16")).to_be_visible(timeout=TIMEOUT_MS)
    expect(status).to_contain_text("16 usable images, 16 captioned")
    expect(page.get_by_label("Trigger word")).to_have_value("ohwx")
    expect(page.get_by_label("Dataset", exact=True)).to_have_value("demo")
    expect(page.locator("#dataset-report")).to_contain_text("Buckets at 64 px")  # the Train tab's resolution
    expect(page.locator("#dataset-report")).not_to_contain_text("smaller than half")
    expect(page.get_by_test_id("cell-0-1").get_by_text("No findings: every caption passes the lint.").first).to_be_visible()
    before = sidecar.read_text(encoding="utf-8").strip()

    # 2. Click an image: its caption is in the box, ready to edit.
    page.get_by_role("button", name="Thumbnail 4 of 16").click()
    box = page.get_by_label("Caption", exact=True)
    expect(box).to_have_value(before, timeout=TIMEOUT_MS)
    expect(page.get_by_text("robot_03.png", exact=False).first).to_be_visible()

    # 3. Edit and save: the count says the typed caption is unsaved before anything is applied, and the
    #    sidecar on disk holds the new caption after Save.
    box.fill(NEW_CAPTION)
    expect(status).to_contain_text("1 unsaved caption changes")
    page.get_by_role("button", name="Save captions").click()
    expect(page.locator("#notice")).to_contain_text("Saved demo: 1 changed captions", timeout=TIMEOUT_MS)
    expect(status).to_contain_text("all changes saved")
    assert sidecar.read_text(encoding="utf-8") == NEW_CAPTION + "\n"
    expect(page.get_by_role("button", name="Thumbnail 4 of 16").locator("img")).to_have_attribute("alt", "robot_03.png")

    # 4. A bulk edit, scrolled down to, shows as unsaved changes in the action bar, which stays in view with
    #    Save and Use for training; Undo takes it back.
    page.get_by_label("Find", exact=True).scroll_into_view_if_needed()
    page.get_by_label("Find", exact=True).fill("toy robot")
    page.get_by_label("Replace with", exact=True).fill("tin robot")
    page.get_by_role("button", name="Replace", exact=True).click()
    expect(status).to_contain_text("16 unsaved caption changes", timeout=TIMEOUT_MS)
    expect(box).to_have_value(NEW_CAPTION.replace("toy", "tin"))
    for name in ("Save captions", "Use for training"):
        expect(page.get_by_role("button", name=name)).to_be_in_viewport()
    expect(status).to_be_in_viewport()
    screenshot(page, "dataset-bulk-edit")
    page.get_by_role("button", name="Undo last bulk edit").click()
    expect(status).to_contain_text("all changes saved", timeout=TIMEOUT_MS)
    expect(box).to_have_value(NEW_CAPTION)
    page.wait_for_function("""() => { const imgs = [...document.querySelectorAll('#dataset-gallery img')];
        return imgs.length >= 16 && imgs.every(i => i.complete && i.naturalWidth > 0); }""", timeout=TIMEOUT_MS)
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "dataset")

    # 5. Use for training: the Train tab opens with the dataset, trigger word and class filled in.
    page.get_by_role("button", name="Use for training").click()
    expect(page.get_by_role("tab", name="Train")).to_have_attribute("aria-selected", "true", timeout=TIMEOUT_MS)
    expect(page.get_by_label("data.dir")).to_have_value("demo")
    expect(page.get_by_label("data.trigger_word")).to_have_value("ohwx")
    page.get_by_text("Resolved config").click()
    yaml_view = page.get_by_role("textbox", name="Code input container").first  # config.yaml
    expect(yaml_view).to_contain_text(f"dir: {server.roots.datasets / 'demo'}", timeout=TIMEOUT_MS)

    # 6. A reload remembers what was sent: the Train tab still trains on it.
    page.reload()
    expect(page.get_by_label("Dataset", exact=True)).to_have_value("demo", timeout=TIMEOUT_MS)
    page.get_by_role("tab", name="Train").click()
    expect(page.get_by_label("data.dir")).to_have_value("demo", timeout=TIMEOUT_MS)
    expect(page.get_by_label("data.trigger_word")).to_have_value("ohwx")
    page.close()
