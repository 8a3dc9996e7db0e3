"""Errors in one place (issue 16, point 2): a refused action is one short line in UI words in the
header's notice area, with the details collapsed under it; no other output is touched; Start is
disabled while the form is invalid, with the reason beside it."""

from __future__ import annotations

import gradio as gr
import pytest

from studio.config import ConfigError, load_config
from studio.core.lock import AcceleratorLock
from studio.engine.runner import Runner
from studio.ui.context import Studio
from studio.ui.form import form_values
from studio.ui.notices import Refusal, refusal_md, refusing
from studio.ui.security import Roots
from studio.ui.train_tab import TrainHandlers


@pytest.fixture
def studio(tmp_path):
    roots = Roots.create(tmp_path / "datasets", tmp_path / "models", tmp_path / "outputs")
    return Studio(runner=Runner(roots.outputs, roots.models, lock=AcceleratorLock(tmp_path / "lock"),
                                datasets_dir=roots.datasets), roots=roots)


def form(**changes):
    return form_values(load_config("tiny-demo")) | changes


def is_skip(value) -> bool:
    return value == gr.skip()


def test_config_problems_read_in_the_forms_words():
    with pytest.raises(ConfigError) as err:
        load_config("tiny-demo", {"lora.rank": -1, "optim.learning_rate": float("nan")})
    assert err.value.problems == ["Rank must be at least 1 (lora.rank).",
                                  "Learning rate must be a number, e.g. 0.0001 (optim.learning_rate)."]
    assert err.value.line == "Rank must be at least 1 (lora.rank). (and 1 more: see the details)"
    assert "`lora.rank`: Input should be greater than or equal to 1" in str(err.value)  # the CLI keeps the key wording


def test_an_invalid_form_disables_start_with_the_reason_beside_it(studio):
    train = TrainHandlers(studio)
    yaml_text, cli, start, ok, check = train.resolve_config("tiny-demo", "x", **form(**{"lora.rank": -1}))
    assert is_skip(yaml_text) and is_skip(cli) and ok is False
    assert check == "✗ Rank must be at least 1 (lora.rank)."
    assert start.interactive is False
    *_, start, ok, check = train.resolve_config("tiny-demo", "x", **form(**{"lora.rank": 8}))
    assert check.startswith("✓ Valid config") and start.interactive is True and ok is True
    *_, start, ok, check = train.resolve_config("tiny-demo", "x", **form(**{"lora.rank": ""}))
    assert check == "✗ Rank is empty: enter a number (lora.rank)." and ok is False


def test_the_poll_keeps_start_disabled_while_the_form_is_invalid(studio):
    train = TrainHandlers(studio)
    start = list(train.poll({}, False))[-2 - 6]  # the buttons are the last six outputs before `seen` and the job
    assert start.interactive is False
    assert list(train.poll({}, True))[-2 - 6].interactive is True


def test_a_refused_start_is_one_line_in_the_notice_and_touches_nothing_else(studio):
    train = TrainHandlers(studio)
    with pytest.raises(Refusal) as err:  # the handler itself: a Refusal (a gr.Error for unwired callers)
        train.start("x", **form(**{"lora.rank": -1}))
    assert err.value.line == "Cannot start: Rank must be at least 1 (lora.rank)."
    notice = gr.Markdown()
    other = gr.Textbox()
    wired = refusing(train.start, [other], notice)
    fn, outputs = wired["fn"], wired["outputs"]
    assert outputs == [other, notice]
    untouched, shown = fn("x", **form(**{"lora.rank": -1}))
    assert is_skip(untouched)
    line, _, details = shown.partition("\n\n")
    assert line.endswith("⚠️ Cannot start: Rank must be at least 1 (lora.rank).")
    assert "<details" in details and "<summary>Details</summary>" in details
    assert "Input should be greater than or equal to 1" in details  # the full check, collapsed
    assert not (studio.roots.outputs / "x").exists()


def test_a_busy_accelerator_is_a_notice_not_a_toast(studio, recwarn):
    train = TrainHandlers(studio)
    fn = refusing(train.start, notice := gr.Markdown(), notice)["fn"]
    studio.runner.lock.acquire("captioning")
    try:
        shown = fn("fresh", **form())
    finally:
        studio.runner.lock.release()
    assert "busy with captioning" in shown and "<details" not in shown
    assert not [w for w in recwarn if issubclass(w.category, UserWarning) and "captioning" in str(w.message)]
    assert not (studio.roots.outputs / "fresh").exists()


def test_a_refused_start_keeps_the_typed_run_name(studio):
    train = TrainHandlers(studio)
    assert is_skip(train.suggest_name("tiny-demo", "my-run"))  # refused: no folder was made
    (studio.roots.outputs / "my-run").mkdir()
    assert train.suggest_name("tiny-demo", "my-run").startswith("tiny-demo-")  # started: a fresh name


def test_a_notice_renders_markdown_and_keeps_details_collapsed():
    text = refusal_md("Pick a grid first", "BackboneError: `x` <script>")
    assert "`x`" not in text.partition("<details")[0]
    assert "&lt;script&gt;" in text and "<script>" not in text
