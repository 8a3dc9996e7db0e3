"""Simulated browser pages for `bench --live`, in a process of their own so that their CPU is never
counted as the server's.

`python -m studio.ui.live_viewers URL VIEWERS SECONDS API=INTERVAL|API=stream ...` opens
VIEWERS API sessions (one per page: each has its own per-session state, as a browser tab does),
prints `ready`, waits for a line on stdin, then for SECONDS holds each `stream` endpoint open and
calls every other endpoint at its interval, the way a page's `gr.Timer` does (a tick that comes
while the last call is still pending is dropped), and prints one JSON line: calls made, their
round-trip seconds, and the updates the streams delivered.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time


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


def stream(client, api_name: str, deadline: float, updates: list[int]) -> None:
    """A page's live stream: open it, hold it until the deadline, count what it delivered."""
    job = client.submit(api_name=api_name)
    time.sleep(max(0.0, deadline - time.perf_counter()))
    updates.append(len(job.outputs()))
    job.cancel()


def main(argv: list[str]) -> int:
    from gradio_client import Client

    url, viewers, seconds, *endpoints = argv
    pairs = [e.split("=", 1) for e in endpoints]
    streams = [api for api, every in pairs if every == "stream"]
    schedule = [(api, float(every)) for api, every in pairs if every != "stream"]
    if hasattr(os, "nice"):
        os.nice(10)  # a viewer waits for the server; it should not take the training thread's core
    clients = [Client(url, verbose=False) for _ in range(int(viewers))]
    # what a fresh page sends: its pickers empty (a page's own state stays on the server, per session)
    named = clients[0].view_api(return_format="dict", print_info=False)["named_endpoints"]
    inputs = {api: {p["parameter_name"]: None for p in named[api]["parameters"] if not p["parameter_has_default"]}
              for api, _ in schedule}
    print("ready", flush=True)
    sys.stdin.readline()
    begin = time.perf_counter()
    deadline = begin + float(seconds)
    round_trips: list[float] = []
    updates: list[int] = []
    # pages opened at different moments: their timers tick out of step
    threads = [threading.Thread(target=poll_loop, args=(client, api, inputs[api], interval,
                                                        begin + interval * i / len(clients), deadline, round_trips))
               for i, client in enumerate(clients) for api, interval in schedule]
    threads += [threading.Thread(target=stream, args=(client, api, deadline, updates))
                for client in clients for api in streams]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"calls": len(round_trips), "round_trips": round_trips, "updates": sum(updates), "wall_s": time.perf_counter() - begin}),
          flush=True)
    for client in clients:
        client.close()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    os._exit(code)  # gradio_client's stream threads stay blocked on their open event streams after close()
