"""How much memory a restore may use: what can still be allocated here (:func:`available_memory`),
and a quick bound on whether an image may need tiles at all (:func:`may_need_tiles`), checked
before :class:`~lorun_peft.export.tiles.TiledNetwork` measures anything.
"""

from __future__ import annotations

import os

import torch

__all__ = ["available_memory", "may_need_tiles", "WHOLE_BYTES_PER_PIXEL"]

WHOLE_BYTES_PER_PIXEL = 2048  # a generous bound on a whole restore's bytes per pixel (the zoo's U-Net: ~525)


def may_need_tiles(pixels: int, memory: int | None = None) -> bool:
    """Whether ``pixels`` may not fit a quarter of the memory whole (a quick bound: nothing is run or measured).

    >>> may_need_tiles(256 * 256, memory=8 << 30), may_need_tiles(6000 * 4000, memory=8 << 30)
    (False, True)
    """
    return pixels * WHOLE_BYTES_PER_PIXEL >= (available_memory() if memory is None else memory) / 4


def available_memory(device: torch.device | str = "cpu") -> int:
    """Bytes that can still be allocated: CUDA's free memory; else Linux ``MemAvailable`` (or free
    pages), less if a container's memory limit (cgroup v2 or v1) leaves less."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    found = []
    for path, key in (("/proc/meminfo", "MemAvailable:"), ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                      ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(path) as lines:
                if key.startswith("/"):  # a cgroup: its limit less its usage
                    limit = lines.read().strip()
                    if limit.isdigit():
                        with open(key) as usage:
                            found.append(int(limit) - int(usage.read().strip()))
                    continue
                found += [int(line.split()[1]) * 1024 for line in lines if line.startswith(key)]
        except (OSError, ValueError):
            continue
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            found.append(8 << 30)
    return max(min(found), 0)
