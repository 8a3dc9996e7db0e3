"""Which accelerator to use, how much memory it has, and which precision `auto` picks and why.

PyTorch is imported inside the functions, on first use: the studio serves its page before it loads
PyTorch (about 2 CPU-s), and modules the page needs import this one."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["fp32", "fp16", "bf16"]


@dataclass(frozen=True)
class DeviceInfo:
    type: Literal["cuda", "mps", "cpu"]
    name: str
    total_memory_bytes: int | None
    """Accelerator memory (CUDA); system memory for MPS (unified) and CPU."""

    @property
    def torch_device(self) -> torch.device:
        import torch

        return torch.device(self.type)


@dataclass(frozen=True)
class PrecisionChoice:
    precision: Precision
    reason: str
    use_grad_scaler: bool

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]


def system_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def detect_device() -> DeviceInfo:
    """CUDA if present, then Apple MPS, then CPU."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return DeviceInfo("cuda", props.name, props.total_memory)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return DeviceInfo("mps", "Apple Silicon (MPS)", system_memory_bytes())
    import platform

    return DeviceInfo("cpu", platform.processor() or platform.machine() or "CPU", system_memory_bytes())


def cuda_has_native_bf16() -> bool:
    """True on Ampere and newer; a T4 emulates bf16 slowly, which does not count."""
    import torch

    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the keyword
        return torch.cuda.get_device_capability(0)[0] >= 8


def choose_precision(requested: str, device: DeviceInfo) -> PrecisionChoice:
    """Resolve `train.precision` for a device, or raise ValueError when it cannot work there."""
    if requested == "auto":
        if device.type == "cuda":
            if cuda_has_native_bf16():
                return PrecisionChoice("bf16", f"{device.name} has native bf16: bf16 autocast, no loss scaling", False)
            return PrecisionChoice("fp16", f"{device.name} has no native bf16: fp16 autocast with loss scaling", True)
        if device.type == "mps":
            return PrecisionChoice("fp32", "Apple MPS: fp32 (half precision gives black images on MPS)", False)
        return PrecisionChoice("fp32", "CPU: fp32 (half precision is slower on CPU and not needed)", False)
    if requested in ("fp16", "bf16") and device.type == "cpu":
        raise ValueError(f"train.precision={requested} needs a GPU; this machine trains on the CPU: use auto or fp32")
    if requested == "bf16" and device.type == "cuda" and not cuda_has_native_bf16():
        raise ValueError(f"train.precision=bf16: {device.name} has no native bf16; use auto (fp16 with loss scaling)")
    if requested == "fp16" and device.type == "mps":
        return PrecisionChoice("fp16", "fp16 on MPS as requested (may give black images; auto uses fp32)", False)
    scaler = requested == "fp16" and device.type == "cuda"
    return PrecisionChoice(requested, f"{requested} as requested", scaler)  # type: ignore[arg-type]


def memory_bytes(device: torch.device) -> int:
    """Peak accelerator memory on CUDA, allocated memory on MPS, resident memory on the CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    if device.type == "mps":
        return torch.mps.current_allocated_memory()
    try:  # resident set size of this process (Linux)
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for `peak_memory_bytes` (CUDA only; MPS and the CPU have no resettable peak)."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured): CUDA peak allocated since the last reset, MPS memory the driver holds
    now, or the CPU process's peak resident set size (RSS) since it started."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "CUDA peak allocated"
    if device.type == "mps":
        return torch.mps.driver_allocated_memory(), "MPS driver allocated"
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024), "peak RSS of this process"


def is_out_of_memory(err: BaseException) -> bool:
    """An allocation failure on any device: CUDA's OutOfMemoryError, MPS's and the CPU allocator's
    RuntimeErrors, or Python's MemoryError."""
    import torch

    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text
                                              or "DefaultCPUAllocator" in text)
