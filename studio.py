"""LoRA Studio entry point: `python studio.py` launches the studio; `python studio.py --help` lists commands."""

import os
import sys

# The studio never phones home (it must work offline and in exposed mode); users can opt back in.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from studio.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
