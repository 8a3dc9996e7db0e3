"""Where the studio answers an action: one line in the header's notice area (`#notice`, Markdown).

A handler that refuses its input raises `Refusal(line, details)` (or, in older code, `gr.Error`):
`refusing(fn, outputs, notice)` wires it so that the refusal becomes one short line in the notice
area, with the details (the library's error, the full check) in a collapsed block under it, and
every other output of the event is left as it was. Raising `gr.Error` from an event instead would
paint an "Error" badge on every output box and show the message in a toast, where Markdown
(backticks) is not rendered.
"""

from __future__ import annotations

import functools
import html
import logging
from typing import Any, Callable, Sequence

import gradio as gr

from studio.ui.live import notice as answer

log = logging.getLogger(__name__)


class Refusal(gr.Error):
    """An action the studio will not do: `line` says what is wrong and what to do, in UI words;
    `details` (optional) is the longer story, shown collapsed. A `gr.Error`, so an event not wired
    through `refusing` still reports it."""

    def __init__(self, line: str, details: str = ""):
        super().__init__(line, title="Not possible", print_exception=False)
        self.line = line
        self.details = details


def refusal_md(line: str, details: str = "") -> str:
    """The notice for a refusal: the line, then the details in a collapsed block (Markdown + <details>)."""
    text = answer(f"⚠️ {line}")
    details = details.strip()
    if details and details != line.strip():
        text += (f'\n\n<details class="notice-details"><summary>Details</summary>\n\n'
                 f"<pre>{html.escape(details)}</pre>\n\n</details>")
    return text


def refusal_of(err: Exception) -> Refusal:
    """A `Refusal` as is; a `gr.Error` as a refusal with its title as the line's lead."""
    if isinstance(err, Refusal):
        return err
    message = str(getattr(err, "message", err))
    title = getattr(err, "title", None)
    lead = f"{title}: " if title and title != "Error" else ""
    first, _, rest = message.partition("\n")
    return Refusal(f"{lead}{first}", rest)


def refusing(fn: Callable[..., Any], outputs: Any, notice: gr.components.Component) -> dict[str, Any]:
    """An event's `fn` and `outputs` (as keyword arguments: `btn.click(inputs=..., **refusing(...))`)
    with `fn`'s refusals sent to `notice` and its other outputs skipped.

    `notice` is added to the outputs when it is not among them; `fn` then returns its own outputs only.
    """
    if outputs is None:
        outs: list[Any] = []
    else:
        outs = list(outputs) if isinstance(outputs, Sequence) else [outputs]
    added = notice not in outs
    full = [*outs, notice] if added else outs
    at = full.index(notice)

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except (Refusal, gr.Error) as err:
            refusal = refusal_of(err)
            log.info("refused: %s", refusal.line)
            values: list[Any] = [gr.skip()] * len(full)
            values[at] = refusal_md(refusal.line, refusal.details)
            return values[0] if len(full) == 1 else tuple(values)
        if not added:
            return result
        values = [] if not outs else [result] if len(outs) == 1 else list(result)
        return (*values, gr.skip()) if values else gr.skip()

    return dict(fn=wrapped, outputs=full)
