"""`python studio.py bench --dataset [--images N]`: what the Dataset tab costs on a big dataset, measured
through Gradio's own request path (`Blocks.process_api`: preprocess, the handler, postprocess, files moved
to Gradio's cache), as the studio answers a browser.

On a generated set of N small images (512 px, PNG and JPEG, three aspect ratios, a caption each), in a
temporary datasets root and a temporary cache folder (the user's own scan cache and thumbnails are
untouched), it times:

- the first open (every image decoded, hashed and cached; the first page of thumbnails made);
- a reopen from a new page (a new browser session: the scan cache answers, nothing is decoded);
- a caption edit (Apply caption) and a bulk edit (Add suffix, which changes every caption).

For each: process CPU seconds (every thread) and wall seconds, and for the edits the bytes of what the
event sends back (the JSON of its postprocessed outputs). Figures are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.data.synthetic import write_image_set
from studio.engine.cache_bench import temporary_env

EDITS = 5
"""Edits of each kind timed (the median is printed)."""


@dataclass
class Timing:
    label: str
    cpu_s: float
    wall_s: float
    sent_bytes: int


def run_dataset_bench(images: int, side: int = 512) -> list[Timing]:
    """The timings (first open, reopen, caption edit, bulk edit) on `images` generated images of `side` px."""
    with tempfile.TemporaryDirectory(prefix="dataset-bench-") as tmp, temporary_env("LORA_STUDIO_CACHE", Path(tmp) / "cache"):
        return asyncio.run(_bench(Path(tmp), images, side))


async def _bench(tmp: Path, images: int, side: int) -> list[Timing]:
    import gradio as gr
    from gradio.state_holder import SessionState

    from studio.core.lock import AcceleratorLock
    from studio.data.lint import caption_token_counts
    from studio.engine.runner import Runner
    from studio.ui.app import Settings, build_app
    from studio.ui.security import Roots

    roots = Roots.create(tmp / "datasets", tmp / "models", tmp / "outputs")
    write_image_set(roots.datasets / "bench", images, side, mixed=True)
    app, _ = build_app(Settings(roots=roots), Runner(roots.outputs, roots.models, lock=AcceleratorLock()))
    fns = {fn.api_name: fn for fn in app.fns.values() if fn.api_name}
    caption_token_counts(["warm up the tokenizer"])  # built once per process, not per open

    async def call(name: str, inputs: list[Any], state: SessionState, event: Any = None) -> tuple[float, float, int]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = await app.process_api(fns[name], inputs, state=state, event_data=event)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return cpu, wall, len(json.dumps(out["data"], default=str).encode())

    def inputs(name: str, values: dict[str, Any]) -> list[Any]:
        """The event's inputs: a state's value comes from the session, the others from `values` by label."""
        return [None if block.stateful else values[getattr(block, "label", None)] for block in fns[name].inputs]

    results = []
    first = SessionState(app)
    opening = {"Dataset": "bench", "Training resolution": 512}
    cpu, wall, sent = await call("open_dataset", inputs("open_dataset", opening), first)
    results.append(Timing(f"first open ({images} images: decode, hash, cache)", cpu, wall, sent))
    session = SessionState(app)  # a new page: nothing in memory, the scan cache on disk
    cpu, wall, sent = await call("open_dataset", inputs("open_dataset", opening), session)
    results.append(Timing("reopen (a new page; the scan cache answers)", cpu, wall, sent))

    state_id = next(block._id for block in fns["apply_caption"].inputs if block.stateful)
    opened = session[state_id]
    editor = opened.editor
    rels = list(editor.captions)
    edit_values = {"Trigger word": "ohwx", "Training resolution": 512}
    edits, bulks = [], []
    for k in range(EDITS):
        select = gr.SelectData(None, {"index": k, "value": None})
        box = editor.captions[opened.selected] if opened.selected else ""  # the box holds the selected caption
        await call("select_image", inputs("select_image", edit_values | {"Caption": box}), session, select)
        typed = edit_values | {"Caption": f"ohwx product, edited by hand, take {k}"}
        edits.append(await call("apply_caption", inputs("apply_caption", typed), session))
        suffix = edit_values | {"Caption": typed["Caption"], "Prefix / suffix text": f"studio shot {k}",
                                "Joined with": "comma"}
        bulks.append(await call("add_suffix", inputs("add_suffix", suffix), session))
    if not editor.captions[rels[EDITS - 1]].startswith(f"ohwx product, edited by hand, take {EDITS - 1}"):
        raise RuntimeError(f"the bench's caption edit did not reach the editor: {editor.captions[rels[EDITS - 1]]!r}")
    for label, runs in ((f"caption edit (Apply caption, median of {EDITS})", edits),
                        (f"bulk edit (Add suffix to all {len(rels)} captions, median of {EDITS})", bulks)):
        results.append(Timing(label, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
                              int(statistics.median(r[2] for r in runs))))
    return results


def format_dataset_bench(results: list[Timing], images: int) -> str:
    lines = [f"Dataset tab at {images} images (512 px PNG/JPEG), through Gradio's request path "
             f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}):",
             f"  {'':62} {'CPU':>9} {'wall':>9} {'sent':>10}"]
    for r in results:
        lines.append(f"  {r.label:62} {_duration(r.cpu_s):>9} {_duration(r.wall_s):>9} {r.sent_bytes / 1024:>7.1f} KB")
    lines.append("  sent: the JSON of the event's postprocessed outputs (what the page receives); "
                 "targets: an edit ≤ 50 ms CPU and ≤ 50 KB, a reopen ≤ 2 s")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
