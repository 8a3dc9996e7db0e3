"""Retake the README's screenshots on the toy world: `python docs/screenshots.py`.

Launches the studio on fresh outputs and datasets folders, then drives Debian's chromium (Playwright)
through the whole loop as a new user would, on the shipped defaults: open the demo dataset, train
`tiny-demo` to the end, look at its checkpoints, make a prompt-only vs LoRA grid of its own sample
prompts at seeds 1–2, and score it with toy-clip. Each tab is shot at 1440 × 1000 (Train at 1440 × 1500, to include its samples) into
docs/screenshots/. Takes a few minutes on a laptop CPU (the training is most of it).

The browser tests shoot the same tabs into test-artifacts/ on their own short runs; these are the
ones that show real learning.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from browser_support import VIEWPORT, field, launch_chromium  # noqa: E402

OUT = REPO / "docs" / "screenshots"
TRAIN_TIMEOUT_MS = 20 * 60_000
TIMEOUT_MS = 5 * 60_000
TALL = {"width": VIEWPORT["width"], "height": 1500}


def wait_for_url(proc: subprocess.Popen, log: Path, since: int = 0) -> str:
    """The URL the studio prints once it serves (in what the log gained after byte `since`)."""
    while proc.poll() is None:
        found = re.search(r"ready: open (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace")[since:])
        if found:
            return found.group(1)
        time.sleep(0.5)
    raise SystemExit(f"the studio exited before serving:\n{log.read_text(errors='replace')}")


def shoot(page, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(OUT / name))
    print(f"wrote {OUT / name}")


def images_loaded(page, selector: str) -> None:
    """Every image of `selector` that is in view has loaded (a gallery's lazy images below its scroll
    area load only when scrolled to, and a screenshot does not show them)."""
    page.wait_for_function(f"""() => {{ const imgs = [...document.querySelectorAll('{selector} img')];
        const inView = imgs.filter(i => {{ const r = i.getBoundingClientRect();
            return r.width > 0 && r.bottom > 0 && r.top < window.innerHeight; }});
        return inView.length > 0 && inView.every(i => i.complete && i.naturalWidth > 0); }}""", timeout=TIMEOUT_MS)



def train_and_shoot(page, expect) -> None:
    """Dataset, Train to the end, Checkpoints."""
    # Dataset: the demo's 16 robots with their captions
    page.get_by_role("button", name="Open the demo").click()
    images_loaded(page, "#dataset-gallery")
    shoot(page, "dataset.png")

    # Train: the defaults, to the end; the loss chart and the last samples show the robot
    page.get_by_role("tab", name="Train").click()
    page.get_by_role("button", name="Start", exact=True).click()
    header = page.locator("#header-job")
    expect(header).to_contain_text("Training", timeout=TIMEOUT_MS)
    expect(header).to_contain_text("Finished", timeout=TRAIN_TIMEOUT_MS)
    expect(page.locator("#latest-samples")).to_contain_text(re.compile(r"step 400\b"), timeout=TIMEOUT_MS)
    images_loaded(page, "#latest-samples")
    page.set_viewport_size(TALL)  # the samples sit below the chart
    shoot(page, "train.png")
    page.set_viewport_size(VIEWPORT)

    # Checkpoints: the finished run, its checkpoints and samples
    page.get_by_role("tab", name="Checkpoints").click()
    expect(page.get_by_role("grid", name="Checkpoints")).to_contain_text("step000400", timeout=TIMEOUT_MS)
    shoot(page, "checkpoints.png")


def main(argv: list[str] | None = None) -> int:
    import argparse

    from playwright.sync_api import expect

    parser = argparse.ArgumentParser(description="Retake the README's screenshots on the toy world.")
    parser.add_argument("--reuse", type=Path, metavar="DIR",
                        help="the work folder of an earlier call whose run finished: shoot only Compare and Score")
    args = parser.parse_args(argv)
    work = args.reuse or Path(tempfile.mkdtemp(prefix="lora-studio-screenshots-"))
    log = work / "studio.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    since = log.stat().st_size if log.exists() else 0
    with open(log, "a") as sink:
        proc = subprocess.Popen([sys.executable, str(REPO / "studio.py"), "--outputs", str(work / "outputs"),
                                 "--datasets", str(work / "datasets"), "--port", "7871"],
                                stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        url = wait_for_url(proc, log, since)
        with launch_chromium() as chromium:
            page = chromium.new_page(viewport=VIEWPORT)
            page.goto(url)
            if not args.reuse:
                train_and_shoot(page, expect)
                page.reload()  # the Compare tab of a page opened mid-run still lists that moment's checkpoints

            # Compare: the run's own sample prompts, prompt only against the final LoRA, seeds 1 and 2
            page.get_by_role("tab", name="Compare").click()
            expect(page.locator("#compare-checkpoints")).to_contain_text("final", timeout=TIMEOUT_MS)
            expect(field(page, "Prompts")).to_have_value(re.compile(r"\{trigger\}"), timeout=TIMEOUT_MS)
            field(page, "Seeds").fill("1,2")
            field(page, "Seeds").press("Tab")
            page.get_by_role("button", name="Make grid").click()
            expect(page.locator("#notice")).to_contain_text("Made grid", timeout=TIMEOUT_MS)
            images_loaded(page, "#grid-gallery")
            shoot(page, "compare.png")

            # Score: toy-clip, the default backbone for toy-sd15 runs
            page.get_by_role("button", name="Send to Score").click()
            expect(page.locator("#score-summary")).to_contain_text("is not scored yet", timeout=TIMEOUT_MS)
            page.get_by_role("button", name="Score", exact=True).click()
            expect(page.locator("#score-recommendation")).to_contain_text("Recommended", timeout=TIMEOUT_MS)
            page.wait_for_function("() => document.querySelectorAll('#score-chart svg path, #score-chart svg symbol, "
                                   "#score-chart canvas').length > 0", timeout=TIMEOUT_MS)
            shoot(page, "score.png")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
