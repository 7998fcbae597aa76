"""What the layouts share: a column's description, how a value is printed, and a setting's fields."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    better: str | None = None  # "min" or "max": which value is bold


def fmt_value(key: str, value) -> str:
    if value is None:
        return "-" if key in ("lpips", "psnr", "ssim") else ""
    if isinstance(value, str):
        return value
    if key == "nfe":
        return f"{value:.0f}" if abs(value - round(value)) < 0.05 else f"{value:.1f}"
    if key == "cache":
        return f"{100 * value:.1f}%"
    if key == "pflops_no_attn":
        return f"{value:.4g}" if value >= 1e-3 else f"{value:.3g}"
    if key == "speedup":
        return f"{value:.2f}x"
    if key == "latency_s":
        return f"{value:.0f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"
    if key == "vbench" or key.startswith("vbench:"):
        return f"{100 * value:.2f}%"
    if key == "psnr":
        return f"{value:.2f}"
    return f"{value:.4f}"


def split_setting(setting: str) -> list[tuple[str, str]]:
    """``a=1,b=[2,3]`` -> [(a, 1), (b, [2,3])]: commas inside brackets do not split."""
    parts, depth, current = [], 0, ""
    for ch in setting:
        depth += ch in "[{(" and 1 or (-1 if ch in "]})" else 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [(k, v if sep else None) for k, sep, v in (part.partition("=") for part in parts if part)]


def kv(key: str, value: str | None) -> str:
    return key if value is None else f"{key}={value}"
