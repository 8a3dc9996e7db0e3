"""Where the studio answers an action: one line in the header's notice area (`#notice`, Markdown).

A handler that refuses its input raises `Refusal(line, details)` (or, in older code, `gr.Error`):
`refusing(fn, outputs, notice)` wires it so that the refusal becomes one short line in the notice
area, with the details (the library's error, the full check) in a collapsed block under it, and
every other output of the event is left as it was. Raising `gr.Error` from an event instead would
paint an "Error" badge on every output box and show the message in a toast, where Markdown
(backticks) is not rendered. `wire(listen, fn, ...)` does the same for an event and, when a refusal
names its `field` (a key of `wire`'s `fields`), also outlines that field in red until the action runs
again; `refused_as` turns a library's ValueError raised while one field is read into such a refusal.
"""

from __future__ import annotations

import contextlib
import functools
import html
import logging
from typing import Any, Callable, Iterator, Mapping, Sequence

import gradio as gr

from studio.ui.live import notice as answer

log = logging.getLogger(__name__)

INVALID = "invalid"
"""The class of a field a refusal names (outlined in red: theme.py)."""


class Refusal(gr.Error):
    """An action the studio will not do: `line` says what is wrong and what to do, in UI words;
    `details` (optional) is the longer story, shown collapsed; `field` (optional) names the field to
    mark. A `gr.Error`, so an event not wired through `refusing` still reports it."""

    def __init__(self, line: str, details: str = "", field: str | None = None):
        super().__init__(line, title="Not possible", print_exception=False)
        self.line = line
        self.details = details
        self.field = field


@contextlib.contextmanager
def refused_as(lead: str, field: str | None = None,
               errors: tuple[type[Exception], ...] = (ValueError, FileNotFoundError)) -> Iterator[None]:
    """`errors` raised inside as a `Refusal` "`lead`: its first line" (the rest in the details) naming `field`."""
    try:
        yield
    except errors as err:
        raise refusal_from(lead, err, field) from None


def refusal_from(lead: str, err: Exception | str, field: str | None = None) -> Refusal:
    """A library's error (or its message) as a refusal: "`lead`: its first line", the rest in the details."""
    first, _, rest = str(err).partition("\n")
    return Refusal(f"{lead}: {first}" if lead else first, rest, field=field)


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
    title = getattr(err, "title", None)
    return refusal_from(title if title and title != "Error" else "", str(getattr(err, "message", err)))


def _mark(component: gr.components.Component, invalid: bool) -> dict[str, Any]:
    """The update that outlines `component` (or takes the outline off), keeping its own classes."""
    own = component.elem_classes
    classes = [own] if isinstance(own, str) else list(own or [])
    return gr.update(elem_classes=[*classes, INVALID] if invalid else classes)


def refusing(fn: Callable[..., Any], outputs: Any, notice: gr.components.Component,
             flag: gr.State | None = None) -> dict[str, Any]:
    """An event's `fn` and `outputs` (as keyword arguments: `btn.click(inputs=..., **refusing(...))`)
    with `fn`'s refusals sent to `notice` and its other outputs skipped.

    `notice` is added to the outputs when it is not among them; `fn` then returns its own outputs only.
    `flag` (a State, last among the outputs) gets the field a refusal names, None after a success;
    `wire` uses it to outline that field.
    """
    if outputs is None:
        outs: list[Any] = []
    else:
        outs = list(outputs) if isinstance(outputs, Sequence) else [outputs]
    added = notice not in outs
    full = [*outs, notice] if added else outs
    at = full.index(notice)
    tail: list[Any] = [] if flag is None else [None]
    full = full + ([] if flag is None else [flag])

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except (Refusal, gr.Error) as err:
            refusal = refusal_of(err)
            log.info("refused: %s", refusal.line)
            values: list[Any] = [gr.skip()] * (len(full) - len(tail))
            values[at] = refusal_md(refusal.line, refusal.details)
            values += [refusal.field] if tail else []
            return values[0] if len(full) == 1 else tuple(values)
        if not added and not tail:
            return result
        values = [] if not outs else [result] if len(outs) == 1 else list(result)
        values += ([gr.skip()] if added else []) + tail
        return values[0] if len(values) == 1 else tuple(values)

    return dict(fn=wrapped, outputs=full)


def wire(listen: Callable[..., Any], fn: Callable[..., Any], inputs: Any, outputs: Any,
         notice: gr.components.Component, fields: Mapping[str, gr.components.Component] | None = None,
         **event: Any) -> Any:
    """`listen(...)` (e.g. `button.click`) running `fn` through `refusing`; returns the event, to chain on.

    `fields` (name → component) are the fields a refusal may name (`Refusal(..., field=name)`): a private
    step after the event outlines the named one in red and takes every other outline off, so an outline
    lasts until the action runs again. The outlines travel through a State, which the API leaves out:
    API callers see the event's own outputs and the notice.
    """
    if not fields:
        return listen(inputs=inputs, **refusing(fn, outputs, notice), **event)
    fields = dict(fields)
    flag = gr.State(None)
    dependency = listen(inputs=inputs, **refusing(fn, outputs, notice, flag), **event)

    def outline(field: str | None) -> Any:
        marks = [_mark(component, name == field) for name, component in fields.items()]
        return marks[0] if len(marks) == 1 else tuple(marks)

    dependency.then(outline, flag, list(fields.values()), api_visibility="private", show_progress="hidden",
                    concurrency_limit=None)
    return dependency
