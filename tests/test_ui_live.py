"""The Train tab's live view without a server: the `/live` stream (one snapshot for the header and the
job panel, sent only when it changed, the chart's rows at most every CHART_SECONDS while a job runs,
the job key the Checkpoints and Compare tabs follow) and the form that shows a running job read-only."""

from __future__ import annotations

import asyncio
import dataclasses
import types

import pytest

from studio.config import load_config
from studio.engine.runner import Snapshot
from studio.ui import train_tab
from studio.ui.app import Studio
from studio.ui.form import FIELD_ORDER, form_values
from studio.ui.security import Roots
from studio.ui.train_tab import CHART_SECONDS, TrainHandlers


class FakeRunner:
    def __init__(self, snap: Snapshot):
        self.snap = snap

    def snapshot(self) -> Snapshot:
        return self.snap


@pytest.fixture
def roots(tmp_path) -> Roots:
    return Roots.create(tmp_path / "datasets", tmp_path / "models", tmp_path / "outputs")


def _row(step: int) -> dict:
    return {"step": step, "loss": 1.0 / step, "loss_smoothed": 1.0, "lr": 1e-4, "steps_per_s": 10.0}


class Stream:
    """Drives `follow` one look at the runner at a time, on the test's clock: `looks(n)` lets the stream
    wait n times (each wait ends in one look at the snapshot) and returns what it sent meanwhile."""

    def __init__(self, handlers: TrainHandlers, monkeypatch):
        self.clock = 1000.0
        self.loop = asyncio.new_event_loop()
        self.go, self.waiting = asyncio.Event(), asyncio.Event()
        self.stream = handlers.follow()
        self.next = None

        async def wait(_seconds: float) -> None:  # the stream's wait between looks
            self.waiting.set()
            await self.go.wait()
            self.go.clear()

        monkeypatch.setattr(train_tab, "asyncio", types.SimpleNamespace(sleep=wait))
        monkeypatch.setattr(train_tab, "time", types.SimpleNamespace(monotonic=lambda: self.clock))
        self.sent = self._run(self._until_waiting())  # the first look, as a page opens

    def _run(self, work):
        return self.loop.run_until_complete(work)

    async def _until_waiting(self) -> list[tuple]:
        """What the stream sends until it waits again."""
        out = []
        while True:
            if self.next is None:
                self.next = asyncio.ensure_future(self.stream.__anext__())
            waiting = asyncio.ensure_future(self.waiting.wait())
            await asyncio.wait({self.next, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if self.next.done():
                out.append(self.next.result())
                self.next = None
                waiting.cancel()
                continue
            self.waiting.clear()
            return out

    def looks(self, count: int) -> list[tuple]:
        async def drive() -> list[tuple]:
            out = []
            for _ in range(count):
                self.go.set()
                out += await self._until_waiting()
            return out

        return self._run(drive())

    def close(self) -> None:
        if self.next is not None:
            self.next.cancel()
        self._run(self.stream.aclose())
        self.loop.close()


def test_the_stream_draws_header_and_panel_from_one_snapshot_and_resends_only_changes(roots, monkeypatch):
    runner = FakeRunner(Snapshot(status="training", run="r", step=1400, total=3000, version=1, metrics=(_row(1400),)))
    stream = Stream(TrainHandlers(Studio(runner=runner, roots=roots)), monkeypatch)
    try:
        (header, panel, view_key, job_key), = stream.sent
        assert "1400/3000" in header and "1400" in panel and "3000" in panel
        assert job_key == ("r", "training", ())
        assert stream.looks(1) == [], "an unchanged snapshot is not sent again"

        # the next step: header and panel move together; the chart waits for CHART_SECONDS
        runner.snap = dataclasses.replace(runner.snap, step=1401, version=2, metrics=(_row(1400), _row(1401)))
        (header, panel, key2, _), = stream.looks(1)
        assert "1401/3000" in header and "1401" in panel
        assert key2 == view_key, "the chart's rows are not re-sent within CHART_SECONDS of the last"
        stream.clock += CHART_SECONDS
        runner.snap = dataclasses.replace(runner.snap, step=1402, version=3, metrics=(*runner.snap.metrics, _row(1402)))
        (_, _, key3, _), = stream.looks(1)
        assert key3 != view_key, "after CHART_SECONDS the new rows change the key that runs the poll"

        # a checkpoint changes the job key the other tabs follow; the end of the job sends its last rows at once
        runner.snap = dataclasses.replace(runner.snap, checkpoints=(1402,), version=4)
        (*_, job_key), = stream.looks(1)
        assert job_key == ("r", "training", (1402,))
        runner.snap = dataclasses.replace(runner.snap, status="finished", step=1403, version=5,
                                          metrics=(*runner.snap.metrics, _row(1403)))
        (header, _, key4, job_key), = stream.looks(1)
        assert "finished" in header and key4 != key3 and job_key[1] == "finished"
    finally:
        stream.close()


def test_a_page_opened_during_a_job_shows_its_settings_read_only(roots):
    config = load_config("tiny-demo", ["train.max_steps=3000", "lora.rank=12"])
    runner = FakeRunner(Snapshot(status="training", run="long-job", step=5, total=3000, version=1, config=config))
    handlers = TrainHandlers(Studio(runner=runner, roots=roots))
    assert handlers.poll({})[-1] == "long-job", "the poll names the job the form follows"

    preset, *fields, name = handlers.show_job("tiny-demo", "", "long-job")
    values = dict(zip(FIELD_ORDER, fields))
    expected = form_values(config)
    assert values["train.max_steps"]["value"] == 3000 and values["lora.rank"]["value"] == 12
    assert all(values[k]["value"] == expected[k] for k in FIELD_ORDER if k not in ("data.dir", "model.base"))
    assert all(v["interactive"] is False for v in values.values())
    assert preset.interactive is False and name.value == "long-job" and name.interactive is False

    # the job ends: the form is editable again, under a free run name
    runner.snap = dataclasses.replace(runner.snap, status="finished", version=2)
    assert handlers.poll({})[-1] is None
    (roots.outputs / "long-job").mkdir()
    preset, *fields, name = handlers.show_job("tiny-demo", "long-job", None)
    assert preset.interactive is True and all(f["interactive"] is True for f in fields)
    assert name.value != "long-job" and name.interactive is True
    # a name typed while it ran that is still free stays (no value sent: the box keeps what was typed)
    *_, name = handlers.show_job("tiny-demo", "my-next-run", None)
    assert name.interactive is True and name.value is None
