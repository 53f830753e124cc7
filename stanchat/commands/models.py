"""List every model preset: what it is made of, which tower its STAN was trained on and which it
runs on (the paper's tower, a closer pairing but not identical, or a transfer), which parts are on
this machine, and how large the missing ones are to download: each preset's `ModelSpec`
(`stanchat.pretrained.resolve`, as `ask` resolves it). Reads the local caches only; never downloads."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object per preset instead of text")


def status(name: str) -> dict:
    """One preset's entry: its parts, their pairing, and what is present locally."""
    from stanchat.pretrained import DEFAULT_PRESET, read_origin, resolve

    spec = resolve(name)  # what `ask --model NAME` would load, and which of its parts are missing
    preset = spec.source
    stan_here, llava_here = "stan" not in spec.missing, "llava" not in spec.missing
    missing = (0 if stan_here else preset.stan_bytes) + (0 if llava_here else preset.llava_bytes)
    measured = read_origin(spec.stan).get("backbone_vs_stock") or {}  # {} before a fetch
    return {"preset": name, "description": preset.description, "default": name == DEFAULT_PRESET,
            "pairing": preset.pairing,
            "llava": preset.llava_source or spec.llava, "llava_present": llava_here,
            "stan": f"{preset.stan_repo}/{preset.stan_checkpoint}" if preset.stan_repo else str(spec.stan),
            "stan_present": stan_here, "stan_dir": str(spec.stan),
            "stan_trained_on": preset.stan_trained_on, "runs_on": preset.runs_on, "note": preset.note,
            "backbone_vs_stock": measured if measured.get("measured") else None, "missing_bytes": missing}


def _text(entry: dict) -> str:
    from stanchat.fetch import size_text

    pairing = {"paper": "the paper's tower, 224 px: closer, not identical (trained tuned, on layers 20-23)",
               "transfer": "a transfer (STAN trained on another tower)",
               "own": "trained together with this LLaVA"}[entry["pairing"]]
    here = lambda present: "present" if present else "missing"  # noqa: E731
    lines = [f"{entry['preset']}{' (default)' if entry['default'] else ''}: {entry['description']}",
             f"  pairing:   {pairing}",
             f"  STAN:      {entry['stan']} [{here(entry['stan_present'])}: {entry['stan_dir']}]",
             f"             trained on {entry['stan_trained_on']}",
             f"             runs on {entry['runs_on']}",
             f"  LLaVA:     {entry['llava']} [{here(entry['llava_present'])}]"]
    if entry["backbone_vs_stock"]:
        measured = entry["backbone_vs_stock"]
        lines.append(f"  measured:  the checkpoint's CLIP tower differs from stock {measured['stock']} by up to "
                     f"{measured['max_abs_diff']:.4g} (largest |difference| over {measured['tensors']} tensors)")
    if entry["note"]:
        lines.append(f"  note:      {entry['note']}")
    if entry["missing_bytes"]:
        lines.append(f"  to fetch:  about {size_text(int(entry['missing_bytes']))} (`stanchat pull {entry['preset']}`)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from stanchat.pretrained import preset_names

    entries = [status(name) for name in preset_names()]
    if args.json:
        for entry in entries:
            print(json.dumps(entry))
    else:
        print("\n\n".join(_text(e) for e in entries))
    return 0
