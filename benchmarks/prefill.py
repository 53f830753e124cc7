"""LLM prefill cost of a video: STAN's one image's worth of tokens against FreeVA-style concat.

Builds one LLaVA-1.5-shaped model in code (336 px / patch 14 tower -> L = 576 patches per frame,
strategy `default`, a Llama LLM scaled down to `--layers` x `--width` so it runs anywhere), grafts a
random STAN onto it, and times the LLM prefill (LLaVA's forward over the prompt with the video
features, `logits_to_keep=1`, as `generate` runs it) for `stan` and `concat` at each frame count,
all in this one run. Prints the ratios, the target (stan at most 0.2 of concat at T = 8), and the
visual-token counts of the peers in DESIGN.md.

    python benchmarks/prefill.py [--layers 4] [--width 1024] [--frames 8 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: its stanchat and benchmarks

import torch  # noqa: E402
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration  # noqa: E402

from benchmarks.common import cpu_name, interleaved, medians, parser, run  # noqa: E402
from benchmarks.results import Figure, Result, Target  # noqa: E402
from stanchat.chat import resolve_dtype  # noqa: E402
from stanchat.graft import Graft, place_video  # noqa: E402
from stanchat.stan import STAN, STANConfig  # noqa: E402

TARGET_T, TARGET = 8, Target("<=", 0.2)  # the target: stan prefill <= 0.2 x concat prefill at T = 8
TEXT_TOKENS = 40  # a typical "USER: <video>\n{question} ASSISTANT:" prompt around the video
IMAGE_TOKEN = 32000  # LLaVA-1.5's <image> id

# DESIGN.md "Peers": visual tokens per video reaching the LLM
PEERS = [
    ("stanchat, 224 px tower (L+1)", 257),
    ("stanchat, LLaVA-1.5 336 px (L+1)", 577),
    ("BT-Adapter", 257),
    ("Video-ChatGPT", 356),
    ("Video-LLaVA (8 x 256)", 2048),
    ("FreeVA (4 x 576)", 2304),
    ("SlowFast-LLaVA", 3680),
    ("LLaVA-NeXT-Video (32 x 144)", 4608),
]


def build_model(layers: int, width: int, max_frames: int) -> LlavaForConditionalGeneration:
    """LLaVA-1.5 token geometry (336 px, patch 14, feature layer -2, strategy default) with a small
    tower (only its token count matters here) and a `layers` x `width` Llama."""
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                              image_size=336, patch_size=14)
    text = LlamaConfig(vocab_size=32064, hidden_size=width, intermediate_size=int(width * 2.6875) // 64 * 64,
                       num_hidden_layers=layers, num_attention_heads=width // 64, num_key_value_heads=width // 64,
                       max_position_embeddings=576 * max_frames + 2 * TEXT_TOKENS)
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=IMAGE_TOKEN,
                         vision_feature_layer=-2, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config).eval()


def prompt_ids(video_tokens: int, device: torch.device, image_token: int = IMAGE_TOKEN) -> torch.Tensor:
    """(1, S): random text ids (below the image token's id, as in LLaVA-1.5's vocabulary) before and
    after `video_tokens` placeholders, S = video_tokens + TEXT_TOKENS."""
    text = torch.randint(min(100, image_token // 2), image_token, (TEXT_TOKENS,),
                         generator=torch.Generator().manual_seed(0))
    video = torch.full((video_tokens,), image_token)
    return torch.cat([text[:6], video, text[6:]])[None].to(device)


def prefill_inputs(llava, features: torch.Tensor) -> dict:
    """LLaVA forward inputs for one prefill over a prompt holding `features` (1, N, E), placed as the
    engine places them (`place_video`)."""
    input_ids = prompt_ids(features.shape[1], features.device, llava.config.image_token_id)
    return {"inputs_embeds": place_video(llava, input_ids, features), "attention_mask": torch.ones_like(input_ids),
            "logits_to_keep": 1, "use_cache": True}


def time_modes(llava: LlavaForConditionalGeneration, inputs: dict[str, dict], repeats: int) -> dict[str, list[float]]:
    """Prefill seconds per mode, `repeats` each: the modes take turns in every round, so a machine
    whose load drifts during the run (shared CPUs) slows them alike; one warm-up round is not counted."""
    device = inputs[next(iter(inputs))]["inputs_embeds"].device
    with torch.inference_mode():
        return interleaved({mode: (lambda i=i: llava(**i)) for mode, i in inputs.items()}, repeats, device)


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--layers", type=int, default=4, help="LLM layers (LLaVA-1.5 7B has 32)")
    p.add_argument("--width", type=int, default=1024, help="LLM width (LLaVA-1.5 7B has 4096)")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16], help="frame counts to compare")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per setting (median reported)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16 (default fp16 on GPU, fp32 on CPU)")
    return p


def measure(args: argparse.Namespace) -> Result:
    """Median prefill seconds of stan and concat at each frame count, and their ratio."""
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    llava = build_model(args.layers, args.width, max(args.frames)).to(device, dtype)
    stan = STAN(STANConfig(depth=2), llava.config.vision_config).to(device, dtype).eval()
    graft = Graft(llava, stan)
    text = llava.config.text_config
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(torch.get_num_threads())
    result = Result("prefill", "LLM prefill of a video (stan vs concat)",
                    setup=f"LLM {text.num_hidden_layers} layers x {text.hidden_size} wide, {str(dtype)[6:]} on {name}; "
                          f"tower 336 px / patch 14 -> L = 576; {TEXT_TOKENS} text tokens; median of {args.repeats} "
                          f"interleaved runs")
    for t in args.frames:
        pixels = torch.randn(1, t, 3, 336, 336, generator=torch.Generator().manual_seed(t)).to(device, dtype)
        features = {mode: graft.features(pixels, mode) for mode in ("stan", "concat")}
        inputs = {mode: prefill_inputs(llava, f) for mode, f in features.items()}
        seconds = time_modes(llava, inputs, args.repeats)
        median = medians(seconds)
        result.data[str(t)] = {"seconds": seconds, "prompt": {m: i["inputs_embeds"].shape[1] for m, i in inputs.items()},
                               "video_tokens": {m: f.shape[1] for m, f in features.items()}}
        result.figures.append(Figure(
            f"stan / concat prefill time, T = {t}", median["stan"] / median["concat"], "x",
            TARGET if t == TARGET_T else None,
            detail=f"{median['stan'] * 1e3:.0f} ms ({features['stan'].shape[1]} video tokens) vs "
                   f"{median['concat'] * 1e3:.0f} ms ({features['concat'].shape[1]})"))
    ours = graft.token_count("stan", 1, 336, 336)
    result.data["peers"] = {"ours": ours, "peers": PEERS}
    result.notes.append(f"Visual tokens per video reaching the LLM: stanchat {ours} at 336 px whatever T is; "
                        + ", ".join(f"{name} {tokens}" for name, tokens in PEERS[2:]) + " (DESIGN.md).")
    return result


def report(result: Result) -> None:
    print(result.setup)
    print(f"{'T':>3} {'mode':>7} {'video tok':>10} {'prompt':>7} {'prefill ms':>11} {'stan/concat':>12}")
    for t, data in result.data.items():
        if t == "peers":
            continue
        median = medians(data["seconds"])
        for mode in ("stan", "concat"):
            ratio = f"{median['stan'] / median['concat']:.3f}" if mode == "stan" else ""
            print(f"{t:>3} {mode:>7} {data['video_tokens'][mode]:>10} {data['prompt'][mode]:>7} "
                  f"{median[mode] * 1e3:>11.1f} {ratio:>12}")
    result.print_figures()
    ours = result.data["peers"]["ours"]
    print(f"\nvisual tokens per video reaching the LLM (stanchat here: {ours} with LLaVA-1.5's strategy "
          f"'default', which drops the CLS)")
    for name, tokens in result.data["peers"]["peers"]:
        print(f"  {name:<36} {tokens:>6}  {tokens / ours:>5.1f}x")


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
