"""The live view's feed: the header badge and the job panel, pushed to every open page over one plain
event stream (`GET studio/live`, text/event-stream), outside Gradio's queue.

Why not a Gradio stream: each message a Gradio event sends costs the server 7-11 CPU-ms of its own work
(queue, session state, postprocessing, diffing), four times a second for the step to stay within a second
of the engine's; five open pages then took 6-9 % of a core from the job. A message here is one snapshot
drawn once for every page (`LiveFeed.message`, cached by the snapshot's version) and written to each
socket: well under a CPU-ms. `bench --live` measures both sides.

Each message also names the loss chart's edition (`live.LossChart`: new rows at most every
CHART_SECONDS); the job panel asks the Train tab for the frame when the name changes (one request,
one output), so every page fetches each edition once and the pages share its build.

On the page, the two `gr.HTML` components run `live_script`: one `EventSource` per page (shared by
both), whose messages set the components' values, so Gradio's own copy stays the one on screen. Each
HTML starts with a `<!--v123-->` mark of its snapshot's version: a value Gradio delivers later (the poll
after a command) but drawn from an older snapshot than the feed's last message is put back at once,
so the step never runs backwards.

Login: the route answers 401 without a login when the studio has one (`login_guard.logged_in`), like
Gradio's own routes. The stream ends when the studio closes (Gradio's stop event), so closing never
waits on an open page.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from studio.engine.runner import Runner
from studio.ui import live
from studio.ui.login_guard import logged_in

FEED_PATH = "/studio/live"
FEED_SECONDS = 0.25
"""How often a page's feed looks at the snapshot: the page's step trails the engine's by at most this
plus delivery. A look that finds nothing new costs nothing but the wake-up."""
KEEPALIVE_SECONDS = 15.0
"""A comment line this often while nothing changes, so proxies (share links, Spaces) keep the stream open."""
RETRY_MS = 1000
"""How soon a browser reconnects a dropped feed (the EventSource's own retry)."""


class LiveFeed:
    """One message per snapshot version, shared by every open page."""

    def __init__(self, runner: Runner, chart: live.LossChart) -> None:
        self.runner, self.chart = runner, chart
        self._message: tuple[Any, bytes] = (None, b"")

    def message(self) -> tuple[Any, bytes]:
        """(its key, the SSE message of the runner's snapshot and the chart's edition): drawn once per key."""
        snap = self.runner.snapshot()
        key = (snap.version, self.chart.key(snap, time.monotonic()))
        if self._message[0] != key:
            payload = {"version": snap.version, "header": live.header_job_html(snap), "job": live.job_html(snap),
                       "chart": list(key[1])}
            self._message = (key, b"data: " + json.dumps(payload).encode() + b"\n\n")
        return self._message

    async def events(self, stop: asyncio.Event | None) -> AsyncIterator[bytes]:
        """The stream of one page: the current snapshot at once, then each new one."""
        yield f"retry: {RETRY_MS}\n\n".encode()
        seen, quiet = None, 0.0
        while stop is None or not stop.is_set():
            version, data = self.message()
            if version != seen:
                seen, quiet = version, 0.0
                yield data
            elif quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield b": still here\n\n"
            await asyncio.sleep(FEED_SECONDS)
            quiet += FEED_SECONDS

    def route(self) -> Route:
        return Route(FEED_PATH, self._endpoint, methods=["GET"], name="studio_live")

    async def _endpoint(self, request: Request) -> Response:
        app: Any = request.app
        if getattr(app, "auth", None) is not None and not logged_in(app, request.scope):
            return JSONResponse({"error": "Not authenticated"}, status_code=401)
        return StreamingResponse(self.events(getattr(app, "stop_event", None)), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def live_script(view: str, asks_for_chart: bool = False) -> str:
    """`js_on_load` of the component that shows `view` ("header" or "job") of the feed's messages; with
    `asks_for_chart`, it also fires its "apply" event for each new chart edition (and once as it mounts)."""
    return (_SCRIPT.replace("__VIEW__", json.dumps(view)).replace("__CHART__", json.dumps(asks_for_chart))
            .replace("__PATH__", json.dumps(FEED_PATH.lstrip("/"))))


_SCRIPT = """
const feed = window.studioLiveFeed ??= (() => {
  const views = {};
  const feed = { latest: null, messages: 0 };
  const version = (html) => Number((/^<!--v(\\d+)-->/.exec(html || "") || [0, -1])[1]);
  const show = (view, from_server) => {
    const latest = feed.latest;
    if (!latest || view.props.value === latest[view.name]) return;
    // a value Gradio sent (the poll) stays only if it is newer than the feed's last message
    if (from_server && version(view.props.value) > latest.version) return;
    view.props.value = latest[view.name];
  };
  const ask_for_chart = (view) => {
    const edition = feed.latest && JSON.stringify(feed.latest.chart);
    if (view.trigger && edition && edition !== view.edition) {
      view.edition = edition;
      view.trigger("apply");
    }
  };
  // relative to the page, so a proxy's path prefix (a Space, a share link) is kept
  const source = new EventSource(new URL(__PATH__, window.location.href));
  source.onmessage = (event) => {
    feed.latest = JSON.parse(event.data);
    feed.messages += 1;
    Object.values(views).forEach((view) => { show(view, false); ask_for_chart(view); });
  };
  feed.add = (name, props, watch, trigger) => {
    const view = views[name] = { name, props, trigger, edition: null };
    show(view, false);
    ask_for_chart(view);
    watch("value", () => show(view, true));
  };
  return feed;
})();
feed.add(__VIEW__, props, watch, __CHART__ ? trigger : null);
"""
