"""The caption linter: each finding on captions that have the problem, none on clean ones, and the
findings in the dataset report and the `check` text."""

from PIL import Image

from studio.data.dataset import scan_dataset
from studio.data.demo import DEMO_TRIGGER, demo_dataset_dir
from studio.data.lint import caption_token_counts, lint_captions
from studio.data.report import build_report, format_report

LONG = "ohwx " + " ".join(f"word{i}" for i in range(40))


def kinds(findings):
    return {f["kind"]: f for f in findings}


def test_clean_captions_have_no_findings():
    captions = {f"{i}.png": f"ohwx toy robot, pose {i}, on a {c} background" for i, c in enumerate("rgbk")}
    assert lint_captions(captions, "ohwx") == []
    assert lint_captions(captions, "") == []


def test_the_demo_dataset_is_clean():
    scan = scan_dataset(demo_dataset_dir())
    assert lint_captions({item.rel: item.caption for item in scan.items}, DEMO_TRIGGER) == []


def test_empty_missing_trigger_and_too_long():
    captions = {"a.png": "ohwx robot", "b.png": "a robot on grass", "c.png": None, "d.png": "", "e.png": LONG}
    found = kinds(lint_captions(captions, "ohwx"))
    assert list(found) == ["empty", "missing_trigger", "too_long"]
    assert found["empty"]["files"] == ["c.png", "d.png"]
    assert found["empty"]["message"].startswith("2 of 5 images have no caption")
    assert found["missing_trigger"]["files"] == ["b.png"]
    assert found["missing_trigger"]["message"].startswith('1 of 3 captions lack the trigger word "ohwx"')
    assert found["too_long"]["files"] == ["e.png"]
    assert f"longer than 77 CLIP tokens (longest {caption_token_counts([LONG])[0]})" in found["too_long"]["message"]
    assert {f["severity"] for f in found.values()} == {"warning"}


def test_identical_captions_across_most_images():
    same = {f"{i}.png": "ohwx toy robot" for i in range(3)}
    found = kinds(lint_captions(same | {"x.png": "ohwx toy robot, waving"}, "ohwx"))
    assert found["identical"]["files"] == ["0.png", "1.png", "2.png"]
    assert found["identical"]["message"].startswith('3 of 4 captions are the same text ("ohwx toy robot")')
    assert "identical" not in kinds(lint_captions(same, "ohwx")), "fewer than 4 captions: too few to judge"
    mixed = same | {f"x{i}.png": f"ohwx toy robot {i}" for i in range(4)}
    assert "identical" not in kinds(lint_captions(mixed, "ohwx")), "3 of 7 is not most"


def test_trigger_words_that_split_or_are_common_words():
    captions = {"a.png": "lorastyle robot", "b.png": "dog robot"}
    split = kinds(lint_captions(captions, "lorastyle"))["trigger_splits"]
    assert split["severity"] == "suggestion" and split["files"] == []
    assert 'reads the trigger word "lorastyle" as 3 pieces (lor + a + style)' in split["message"]
    assert '"ohwx"' in split["message"]
    common = kinds(lint_captions(captions, "dog"))["common_trigger"]
    assert 'The trigger word "dog" is an everyday word for CLIP (vocabulary id 1929' in common["message"]
    for rare in ("ohwx", "sks", "zwx"):  # zwx: 2 pieces, under the limit
        assert not {"trigger_splits", "common_trigger"} & set(kinds(lint_captions(captions, rare)))
    assert "trigger_splits" in kinds(lint_captions(captions, "ohwx lorastyle")), "each word of a phrase"


def test_report_and_check_text_carry_the_findings(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 64), (60 * i, 0, 0)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("a red square\n" if i else "", encoding="utf-8")
    report = build_report(scan_dataset(folder), resolution=64, trigger_word="ohwx")
    assert [f["kind"] for f in report["lint"]] == ["empty", "missing_trigger"]
    assert report["ok"] is True, "lint findings are warnings, not problems"
    lines = format_report(report).splitlines()
    assert "Caption lint (2 findings):" in lines
    assert "  [warning] 1 of 4 images have no caption: they train on an empty prompt, so the concept leaks into " \
           "everything. Write a caption, or auto-caption them (Dataset tab, or `python studio.py caption`)." in lines
    assert "    files: 1.png, 2.png, 3.png" in lines
    assert lines[-1] == "Ready to train."
