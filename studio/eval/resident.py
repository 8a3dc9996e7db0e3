"""What evaluation keeps loaded between jobs, in one owner: the comparison grids' base pipeline and the
scoring backbones (CLIP, DINO, Inception).

Loading a base model or a backbone takes seconds to minutes, so the studio keeps them between grids
and scores. A job that is not evaluation — training, a dry run, captioning, a merged export — loads its
own models, and both rarely fit on one accelerator: `EvalModels` listens to the accelerator lock and
frees everything the moment such a job takes it, before that job loads anything. Grids, batches and
scoring take the lock under the names in `EVAL_JOBS`, and keep what is loaded.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from studio.core.lock import ACCELERATOR, AcceleratorLock, Holder

if TYPE_CHECKING:
    from studio.eval.pipelines import PipelineCache

log = logging.getLogger(__name__)

EVAL_JOBS = frozenset({"comparison grid", "batch generation", "scoring"})
"""The accelerator-lock names of the jobs that use the loaded models (eval/grids.py, generate.py,
scoring.py, batch_scores.py): taking the lock for one of these keeps them."""


class EvalModels:
    """The process's loaded evaluation models; frees them when a job that isn't evaluation takes `lock`."""

    def __init__(self, models_dir: Path | None = None, lock: AcceleratorLock = ACCELERATOR) -> None:
        self.models_dir = models_dir
        self._mutex = threading.Lock()
        self._pipelines: PipelineCache | None = None
        lock.on_acquire(self._job_started)

    def pipelines(self) -> PipelineCache:
        """The one pipeline cache (made on first use: importing diffusers takes seconds)."""
        from studio.eval.pipelines import PipelineCache

        with self._mutex:
            if self._pipelines is None:
                self._pipelines = PipelineCache(self.models_dir)
            return self._pipelines

    @property
    def loaded(self) -> list[str]:
        """What is loaded now: "pipeline", "clip:NAME", "dino:NAME", "inception:NAME"."""
        import sys

        out = ["pipeline"] if self._pipelines is not None and self._pipelines.loaded else []
        backbones = sys.modules.get("studio.eval.backbones")  # never imported: nothing of it is loaded
        if backbones is not None:
            out += backbones.loaded_backbones()
        inception = sys.modules.get("studio.eval.inception")
        if inception is not None:
            out += [f"inception:{name}" for name in inception.loaded_inception()]
        return out

    def release(self) -> None:
        """Free the pipeline and every backbone; the next grid or score loads them again."""
        import sys

        if self._pipelines is not None:
            self._pipelines.clear()
        for module, unload in (("studio.eval.backbones", "unload_backbones"),
                               ("studio.eval.inception", "unload_inception")):
            if module in sys.modules:  # not imported: nothing to free
                getattr(sys.modules[module], unload)()

    def _job_started(self, holder: Holder) -> None:
        if holder.who in EVAL_JOBS:
            return
        loaded = self.loaded
        if loaded:
            log.info("freeing the evaluation models (%s) for %s", ", ".join(loaded), holder.who)
            self.release()
