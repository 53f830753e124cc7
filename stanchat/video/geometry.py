"""Picture geometry shared by decoding (numpy) and preprocessing (torch): one rule for each size.

The rules follow transformers' `CLIPImageProcessor`, so frames decoded at `size` are already what
the processor's resize would produce and preprocessing only crops them.
"""

from __future__ import annotations


def short_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the shorter side at `size` and the aspect kept (longer side floored)."""
    if width <= height:
        return size, max(1, int(size * height / width))
    return max(1, int(size * width / height)), size


def center_crop_box(width: int, height: int, crop_width: int, crop_height: int) -> tuple[int, int]:
    """(left, top) of a crop_width x crop_height box centred in a width x height picture."""
    return (width - crop_width) // 2, (height - crop_height) // 2
