"""What the kernel says about this process's memory, read from /proc/self/status (Linux).

Standard library only, so the cost meter (`include.pipeline.costs`, loaded in every task before
TensorFlow) and the benchmark subprocess (`include.quality.benchmark`) share it.

    status_kb("VmRSS")    resident memory now, KiB (None where /proc is missing)
    status_kb("VmHWM")    the peak resident memory ("high-water mark"), KiB
    peak_rss_kb()         VmHWM, else getrusage's ru_maxrss (KiB on Linux)
"""
from __future__ import annotations

STATUS = "/proc/self/status"


def status_kb(field: str) -> int | None:
    """The value of one `Field:  N kB` line of /proc/self/status, or None."""
    try:
        with open(STATUS) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_kb() -> int:
    """This process's peak resident memory in KiB: VmHWM where /proc has it, else ru_maxrss."""
    hwm = status_kb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
