"""The Train tab's live view without a server: the live feed (the header and the job panel of one
snapshot, each new snapshot once), the `/live` stream (only keys, sent only when they change: the chart's
rows at most every CHART_SECONDS while a job runs, the job key the Checkpoints and Compare tabs follow)
and the form that shows a running job read-only."""

from __future__ import annotations

import asyncio
import dataclasses
import types

import gradio as gr
import pytest

from studio.config import load_config
from studio.engine.runner import Snapshot
from studio.ui import live, live_feed, train_tab
from studio.ui.app import Studio
from studio.ui.form import FIELD_ORDER, form_values
from studio.ui.live_feed import LiveFeed, live_script
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


def test_the_stream_sends_only_keys_and_only_when_they_change(roots, monkeypatch):
    runner = FakeRunner(Snapshot(status="training", run="r", step=1400, total=3000, version=1, metrics=(_row(1400),)))
    stream = Stream(TrainHandlers(Studio(runner=runner, roots=roots)), monkeypatch)
    try:
        (view_key, job_key), = stream.sent
        assert job_key == ("r", "training", ())
        assert stream.looks(1) == [], "an unchanged snapshot is not sent again"

        # new steps and rows alone send nothing: the header, the panel and the chart's edition are the feed's
        runner.snap = dataclasses.replace(runner.snap, step=1401, version=2, metrics=(_row(1400), _row(1401)))
        assert stream.looks(1) == []
        stream.clock += CHART_SECONDS
        runner.snap = dataclasses.replace(runner.snap, step=1402, version=3, metrics=(*runner.snap.metrics, _row(1402)))
        assert stream.looks(1) == [], "new rows alone do not run the poll"

        # scored rows (at the chart's next edition) and samples change the key that runs the poll
        stream.clock += CHART_SECONDS
        scored = {**_row(1403), "clip_i": 0.5, "clip_t": 0.3}
        runner.snap = dataclasses.replace(runner.snap, step=1403, version=4, metrics=(*runner.snap.metrics, scored))
        (key3, _), = stream.looks(1)
        assert key3 != view_key and key3[-1] == 1, "the score chart is redrawn by the poll"
        runner.snap = dataclasses.replace(runner.snap, version=5, sample_step=1403)
        (key4, _), = stream.looks(1)
        assert key4 != key3

        # a checkpoint changes the job key the other tabs follow; so does the end of the job
        runner.snap = dataclasses.replace(runner.snap, checkpoints=(1402,), version=6)
        (key, job_key), = stream.looks(1)
        assert job_key == ("r", "training", (1402,)) and key == key4
        runner.snap = dataclasses.replace(runner.snap, status="finished", step=1404, version=7)
        (key5, job_key), = stream.looks(1)
        assert key5 != key4 and job_key[1] == "finished"
    finally:
        stream.close()


def _feed_messages(feed: LiveFeed, runner: FakeRunner, snaps: list[Snapshot], monkeypatch,
                   looks_per_snap: int = 2) -> list:
    """What one page's feed sends while the runner goes through `snaps`, `looks_per_snap` looks each."""
    import json

    async def collect() -> list:
        stop, out, looks = asyncio.Event(), [], 0
        events = feed.events(stop)

        async def no_wait(_seconds: float) -> None:
            nonlocal looks
            looks += 1
            index = looks // looks_per_snap
            if index >= len(snaps):
                stop.set()
            else:
                runner.snap = snaps[index]

        monkeypatch.setattr(live_feed, "asyncio", types.SimpleNamespace(sleep=no_wait))
        async for chunk in events:
            out.append(chunk)
        return [json.loads(c[len(b"data: "):]) if c.startswith(b"data: ") else c for c in out]

    runner.snap = snaps[0]
    return asyncio.run(collect())


def test_the_feed_draws_header_and_panel_from_one_snapshot_and_sends_each_new_one_once(roots, monkeypatch):
    first = Snapshot(status="training", run="r", step=1400, total=3000, version=7, metrics=(_row(1400),))
    later = dataclasses.replace(first, step=1401, version=8, metrics=(_row(1400), _row(1401)))
    runner = FakeRunner(first)
    feed = LiveFeed(runner, live.LossChart())
    retry, one, two = _feed_messages(feed, runner, [first, later], monkeypatch, looks_per_snap=3)
    assert retry.startswith(b"retry: "), "the browser is told how soon to reconnect"
    assert one["version"] == 7 and two["version"] == 8, "each snapshot once, however often the feed looks"
    for message, step in ((one, 1400), (two, 1401)):
        assert f"{step}/3000" in message["header"] and f'aria-valuenow="{step}"' in message["job"]
        assert message["header"].startswith(f"<!--v{message['version']}-->")
        assert message["job"].startswith(f"<!--v{message['version']}-->"), "the page keeps the newer of feed and poll"

    # five pages, one drawing: the message of a version is built once and shared
    assert feed.message()[1] is feed.message()[1]
    assert two["header"] == live.header_job_html(later) and two["job"] == live.job_html(later)
    assert one["chart"] == ["r", 1], "each message names the loss chart's edition the page should show"


def test_the_page_script_listens_to_one_feed_per_page():
    header, job = live_script("header"), live_script("job", asks_for_chart=True)
    assert 'feed.add("header", props, watch, false ? trigger : null)' in header
    assert 'feed.add("job", props, watch, true ? trigger : null)' in job, "the panel asks for each chart edition"
    assert "window.studioLiveFeed ??=" in header, "the header and the panel share the page's one EventSource"
    assert 'new EventSource(new URL("studio/live", window.location.href))' in job, "relative: a proxy's prefix stays"


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


def test_pages_share_one_chart_edition_per_chart_interval():
    chart = live.LossChart()
    snap = Snapshot(status="training", run="r", step=2, total=100, version=1, metrics=(_row(1), _row(2)))
    first_key, first = chart.frame(snap, 1000.0)
    later = dataclasses.replace(snap, step=3, version=2, metrics=(*snap.metrics, _row(3)))
    assert chart.key(later, 1001.0) == first_key and chart.frame(later, 1001.0)[1] is first, \
        "a page that asks a moment later gets the same frame, built once"
    key, frame = chart.frame(later, 1000.0 + CHART_SECONDS)
    assert key == ("r", 3) and frame is not first and 3 in set(frame["step"])
    ended = dataclasses.replace(later, status="finished", step=4, version=3, metrics=(*later.metrics, _row(4)))
    assert chart.key(ended, 1000.0 + CHART_SECONDS) == ("r", 4), "an ended job's last rows come at once"
    other = Snapshot(status="training", run="next", step=1, total=100, version=4, metrics=(_row(1),))
    assert chart.key(other, 1000.0 + CHART_SECONDS) == ("next", 1), "a new run's chart comes at once"


def test_the_chart_request_sends_the_current_edition(roots):
    snap = Snapshot(status="training", run="r", step=2, total=100, version=1, metrics=(_row(1), _row(2)))
    handlers = TrainHandlers(Studio(runner=FakeRunner(snap), roots=roots))
    frame = handlers.chart()
    assert sorted(set(frame["step"])) == [1, 2] and set(frame["series"]) == {"raw", "smoothed"}
