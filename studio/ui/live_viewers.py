"""Simulated browser pages for `bench --live`, in a process of their own so that their CPU is never
counted as the server's.

`python -m studio.ui.live_viewers URL VIEWERS SECONDS API=INTERVAL|stream|follow|edition PATH=feed ...`
opens VIEWERS API sessions (one per page: each has its own per-session state, as a browser tab does).
It opens the pages first: each holds every `stream` endpoint and every `feed` (the studio's own event
stream at PATH, as the page's EventSource does) open and calls every other endpoint once, as a page
does when it loads. A `follow` endpoint is called only then: a page calls it when its stream's view key
changes (a new sample, checkpoint or status), which the API cannot see (the key is session state), and
which the bench's job, saving and sampling nothing, does not do. An `edition` endpoint is called
whenever a feed message names a new chart edition, as the page's panel does. Then it prints `ready`
and waits for a line on stdin, so that what an open page costs is measured apart from what opening it
costs. For SECONDS it then calls every other endpoint at
its interval, the way a page's `gr.Timer` does (a tick that comes while the last call is still pending
is dropped), and at the deadline, before closing anything, prints one JSON line: calls made, their
round-trip seconds, and the updates the streams and feeds delivered in those SECONDS.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

OPEN_SECONDS = 2.0
"""How long the pages get to open before `ready`: each stream's and feed's first message has come."""


def poll_loop(client, api_name: str, inputs: dict, interval: float, start: float, deadline: float,
              round_trips: list[float]) -> None:
    tick = start
    time.sleep(max(0.0, start - time.perf_counter()))
    while tick < deadline:
        t0 = time.perf_counter()
        client.predict(api_name=api_name, **inputs)
        round_trips.append(time.perf_counter() - t0)
        now = time.perf_counter()
        while tick <= now:  # the next tick after the call returned; missed ones are dropped
            tick += interval
        time.sleep(max(0.0, tick - now))


class Feed(threading.Thread):
    """A page's live feed: read its messages from the moment the page opens, and call the `edition`
    endpoints whenever a message names a new chart edition, as the page does. Counts the messages and
    the calls' round trips from `begin` to `deadline`."""

    def __init__(self, url: str, path: str, client, editions: list[tuple[str, dict]]):
        super().__init__(daemon=True)
        self.url, self.client, self.editions = url.rstrip("/") + path, client, editions
        self.count, self.begin, self.deadline, self.stopped = 0, None, None, False
        self.round_trips: list[float] = []

    def run(self) -> None:
        import httpx

        edition = None
        with httpx.stream("GET", self.url, timeout=60) as response:
            for line in response.iter_lines():
                if self.stopped:
                    return
                if not line.startswith("data: "):
                    continue
                now = time.perf_counter()
                measured = self.begin is not None and self.begin <= now < self.deadline
                self.count += measured
                chart = json.loads(line[len("data: "):]).get("chart")
                if chart != edition:
                    edition = chart
                    for api_name, inputs in self.editions:
                        t0 = time.perf_counter()
                        self.client.predict(api_name=api_name, **inputs)
                        if measured:
                            self.round_trips.append(time.perf_counter() - t0)


class Stream(threading.Thread):
    """A page's Gradio stream, held open from the page's opening; counts its messages from `begin` to
    `deadline`."""

    def __init__(self, client, api_name: str):
        super().__init__(daemon=True)
        self.job = client.submit(api_name=api_name)
        self.count, self.begin, self.deadline, self.opened = 0, None, None, threading.Event()

    def run(self) -> None:
        try:
            for _ in self.job:
                now = time.perf_counter()
                self.count += self.begin is not None and self.begin <= now < self.deadline
                self.opened.set()
        except Exception as err:  # noqa: BLE001 - the stream is cancelled when the pages close
            if self.begin is None or time.perf_counter() < self.deadline:
                print(f"a stream failed: {err!r}", file=sys.stderr, flush=True)
            self.opened.set()


def main(argv: list[str]) -> int:
    from gradio_client import Client

    url, viewers, seconds, *endpoints = argv
    pairs = [e.split("=", 1) for e in endpoints]
    streams = [api for api, every in pairs if every == "stream"]
    feeds = [path for path, every in pairs if every == "feed"]
    follows = [api for api, every in pairs if every == "follow"]
    editions = [api for api, every in pairs if every == "edition"]
    schedule = [(api, float(every)) for api, every in pairs if every not in ("stream", "feed", "follow", "edition")]
    if hasattr(os, "nice"):
        os.nice(10)  # a viewer waits for the server; it should not take the training thread's core
    clients = [Client(url, verbose=False) for _ in range(int(viewers))]
    # what a fresh page sends: its pickers empty (a page's own state stays on the server, per session)
    named = clients[0].view_api(return_format="dict", print_info=False)["named_endpoints"]
    inputs = {api: {p["parameter_name"]: None for p in named[api]["parameters"] if not p["parameter_has_default"]}
              for api in [*(api for api, _ in schedule), *follows, *editions]}

    # 1. The pages open: streams and feeds held open, each timed endpoint called once.
    jobs = [Stream(client, api) for client in clients for api in streams]
    readers = [Feed(url, path, client, [(api, inputs[api]) for api in editions]) for client in clients
               for path in feeds]
    for thread in [*jobs, *readers]:
        thread.start()
    for job in jobs:
        job.opened.wait(60)
    for client in clients:
        for api in follows:
            client.predict(api_name=api, **inputs[api])
    for client in clients:
        for api, _ in schedule:
            client.predict(api_name=api, **inputs[api])
    time.sleep(OPEN_SECONDS)
    print("ready", flush=True)
    sys.stdin.readline()

    # 2. Open pages, measured.
    begin = time.perf_counter()
    deadline = begin + float(seconds)
    for job in jobs:
        job.deadline, job.begin = deadline, begin
    for reader in readers:
        reader.deadline, reader.begin = deadline, begin
    round_trips: list[float] = []
    # pages opened at different moments: their timers tick out of step
    threads = [threading.Thread(target=poll_loop, args=(client, api, inputs[api], interval,
                                                        begin + interval * i / len(clients), deadline, round_trips))
               for i, client in enumerate(clients) for api, interval in schedule]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, deadline - time.perf_counter()))
    updates = sum(job.count for job in jobs) + sum(reader.count for reader in readers)
    for thread in threads:
        thread.join()
    round_trips += [trip for reader in readers for trip in reader.round_trips]
    print(json.dumps({"calls": len(round_trips), "round_trips": round_trips, "updates": updates,
                      "wall_s": time.perf_counter() - begin}), flush=True)

    # 3. The pages close (after the report: not measured).
    for reader in readers:
        reader.stopped = True
    for job in jobs:
        job.job.cancel()
    for client in clients:
        client.close()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    os._exit(code)  # gradio_client's stream threads stay blocked on their open event streams after close()
