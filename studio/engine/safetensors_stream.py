"""Write a `.safetensors` file one tensor at a time, for merged models of 2–7 GB.

The header is built from each tensor's shape and (target) dtype; then every tensor's bytes go
straight from its memory to the file, cast to the target dtype one tensor at a time. So writing a
model never needs a second copy of it in memory (whatever safetensors version is installed), and
progress can be reported in bytes. The layout is the safetensors format: an 8-byte little-endian
header length, the JSON header (padded with spaces to 8 bytes), then the tensors back to back
(https://github.com/huggingface/safetensors#format). The file appears atomically (temp + rename).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

DTYPE_CODES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
               torch.bool: "BOOL"}

ByteProgress = Callable[[int, int], None]
"""Called as `progress(bytes_written, bytes_total)` after each tensor."""


def _target_dtype(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """Floating-point tensors take `dtype`; integer and bool tensors keep theirs."""
    return dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype


def tensor_bytes(tensors: Mapping[str, torch.Tensor], dtype: torch.dtype | None = None) -> int:
    """The size of the tensor data of a file holding `tensors` in `dtype`."""
    return sum(t.numel() * _target_dtype(t, dtype).itemsize for t in tensors.values())


def write_safetensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
                      *, dtype: torch.dtype | None = None, progress: ByteProgress | None = None) -> Path:
    """Write `tensors` (in order) to `path`; floating-point tensors are cast to `dtype` if given."""
    if sys.byteorder != "little":  # pragma: no cover - every platform the studio runs on is little-endian
        raise RuntimeError("writing .safetensors needs a little-endian machine")
    path = Path(path)
    header: dict[str, object] = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(v, str)]
        if bad:
            raise TypeError(f"safetensors metadata values must be strings: {bad[:3]}")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, tensor in tensors.items():
        target = _target_dtype(tensor, dtype)
        if target not in DTYPE_CODES:
            raise TypeError(f"tensor {name!r} has dtype {target}, which this writer does not store")
        size = tensor.numel() * target.itemsize
        header[name] = {"dtype": DTYPE_CODES[target], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(struct.pack("<Q", len(raw)))
            out.write(raw)
            written = 0
            for tensor in tensors.values():
                # one tensor's cast / contiguous copy at most; a tensor already in dtype is not copied
                data = tensor.detach().to(device="cpu", dtype=_target_dtype(tensor, dtype)).contiguous()
                if data.numel():
                    out.write(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
                written += data.numel() * data.element_size()
                del data
                if progress is not None:
                    progress(written, offset)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
