"""What the tabs share, typed: the one `Studio` (runner, roots, the shell's components, the loaded
evaluation models) and the hand-offs a tab offers another — Dataset → Train ("Use for training"),
Compare → Score ("Send to Score", "Score this batch").

A tab module imports this module, never another tab, so the tabs form no import circle: `app`
imports the tabs, the tabs import `context`. A tab that offers a hand-off fills its link here
(`studio.train`, `studio.score`) while it builds; a tab that uses one registers its wiring with
`studio.when_built(...)`, which runs once every tab is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from studio.core.lock import ACCELERATOR
from studio.engine.runner import Runner
from studio.engine.runs import RunFolder
from studio.eval.resident import EvalModels
from studio.ui.live import LossChart
from studio.ui.security import PathNotAllowed, Roots

DATASET_TAB, TRAIN_TAB, CHECKPOINTS_TAB, COMPARE_TAB, SCORE_TAB = "dataset", "train", "checkpoints", "compare", "score"
"""Tab ids (what `gr.Tabs(selected=...)` takes)."""


@dataclass(frozen=True)
class Step:
    """An event step one tab chains after an event of another (`.then(**step.kwargs())`)."""

    fn: Callable[..., Any]
    inputs: list[Any]
    outputs: list[Any]
    inputs_kwargs: dict[str, Any] | None = None
    api_name: str | None = None

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(fn=self.fn, inputs=self.inputs, outputs=self.outputs, api_visibility="private",
                                   show_progress="hidden")
        if self.inputs_kwargs:
            out["inputs_kwargs"] = self.inputs_kwargs
        if self.api_name:
            out["api_name"] = self.api_name
        return out


@dataclass(frozen=True)
class TrainLink:
    """What the Train tab lets others fill in, and how it re-resolves its config after they did."""

    fields: dict[str, gr.components.Component]
    """Config key → its form field."""
    resolve: Step


@dataclass(frozen=True)
class ScoreLink:
    """What the Score tab lets others pick, and how it then shows what was picked."""

    run: gr.Dropdown
    grid: gr.Dropdown
    batch: gr.Dropdown
    show_grid: Step
    show_batch: Step


@dataclass
class Studio:
    """What every tab shares: the one runner, the roots, the evaluation models, the shell's components
    and the tabs' hand-offs."""

    runner: Runner
    roots: Roots
    eval_models: EvalModels | None = None
    """The grid pipeline and scoring backbones kept loaded (freed when a job takes the accelerator)."""
    app: gr.Blocks | None = None
    tabs: gr.Tabs | None = None
    chart: LossChart = field(default_factory=LossChart)
    """The loss chart's editions, shared by every page (the live feed names them, the Train tab draws them)."""
    job_key: gr.State | None = None
    """(run, status, checkpoints) of the studio's job, set by the Train tab's live stream: a tab that
    lists runs or checkpoints follows its changes (one event per change, no timer)."""
    header_job: gr.HTML | None = None
    notice: gr.Markdown | None = None
    """The header's one-line answer to the last action (started, paused, refused and why)."""
    train: TrainLink | None = None
    score: ScoreLink | None = None
    _deferred: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.eval_models is None:
            lock = getattr(self.runner, "lock", ACCELERATOR)  # a test's stand-in runner may have none
            self.eval_models = EvalModels(self.roots.models, lock=lock)

    def when_built(self, wire: Callable[[], None]) -> None:
        """Run `wire()` once every tab is built (wiring that needs another tab's components)."""
        self._deferred.append(wire)

    def finish_build(self) -> None:
        for wire in self._deferred:
            wire()
        self._deferred.clear()

    def run(self, name: str) -> RunFolder:
        """The run `name` in the outputs folder, or the error the page shows when there is none."""
        try:
            return self.roots.run(name)
        except PathNotAllowed as err:
            raise gr.Error(str(err), title="No such run") from None
