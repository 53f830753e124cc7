"""LLM prefill cost of a video: STAN's one image's worth of tokens against FreeVA-style concat.

Builds one LLaVA-1.5-shaped model in code (336 px / patch 14 tower -> L = 576 patches per frame,
strategy `default`, a Llama LLM scaled down to `--layers` x `--width` so it runs anywhere), grafts a
random STAN onto it, and times the LLM prefill (LLaVA's forward over the prompt with the video
features, `logits_to_keep=1`, as `generate` runs it) for `stan` and `concat` at each frame count,
all in this one run. Prints the ratios, the target (stan at most 0.2 of concat at T = 8), and the
visual-token counts of the peers in DESIGN.md.

    PYTHONPATH=. python benchmarks/prefill.py [--layers 4] [--width 1024] [--frames 8 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling

from stanchat.chat import resolve_dtype
from stanchat.graft import Graft
from stanchat.stan import STAN, STANConfig

TARGET_T, TARGET_RATIO = 8, 0.2  # the target: stan prefill <= 0.2 x concat prefill at T = 8
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


def prompt_ids(video_tokens: int, device: torch.device) -> torch.Tensor:
    """(1, S): text before and after `video_tokens` placeholders, S = video_tokens + TEXT_TOKENS."""
    text = torch.randint(100, 32000, (TEXT_TOKENS,), generator=torch.Generator().manual_seed(0))
    video = torch.full((video_tokens,), IMAGE_TOKEN)
    return torch.cat([text[:6], video, text[6:]])[None].to(device)


def prefill_inputs(features: torch.Tensor) -> dict:
    """LLaVA forward inputs for one prefill over a prompt holding `features` (1, N, E)."""
    input_ids = prompt_ids(features.shape[1], features.device)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "logits_to_keep": 1,
            "use_cache": True, "mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=[features[0]])}}


def time_once(llava: LlavaForConditionalGeneration, inputs: dict) -> float:
    """Seconds of one prefill (the GPU waited for on both ends)."""
    if inputs["input_ids"].is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        llava(**inputs)
    if inputs["input_ids"].is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_modes(llava: LlavaForConditionalGeneration, inputs: dict[str, dict], repeats: int) -> dict[str, float]:
    """Median prefill seconds per mode. The modes take turns in every round, so a machine whose load
    drifts during the run (shared CPUs) slows them alike; one warm-up round is not counted."""
    seconds: dict[str, list[float]] = {mode: [] for mode in inputs}
    for round_ in range(repeats + 1):
        for mode, mode_inputs in inputs.items():
            elapsed = time_once(llava, mode_inputs)
            if round_ > 0:
                seconds[mode].append(elapsed)
    return {mode: statistics.median(values) for mode, values in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4, help="LLM layers (LLaVA-1.5 7B has 32)")
    parser.add_argument("--width", type=int, default=1024, help="LLM width (LLaVA-1.5 7B has 4096)")
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16], help="frame counts to compare")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per setting (median reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16 (default fp16 on GPU, fp32 on CPU)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)

    llava = build_model(args.layers, args.width, max(args.frames)).to(device, dtype)
    stan = STAN(STANConfig(depth=2), llava.config.vision_config).to(device, dtype).eval()
    graft = Graft(llava, stan)
    text = llava.config.text_config
    print(f"LLM: {text.num_hidden_layers} layers x {text.hidden_size} wide, {device.type} {str(dtype)[6:]}; "
          f"tower 336 px / patch 14 -> L = 576; {TEXT_TOKENS} text tokens; median of {args.repeats}")
    print(f"{'T':>3} {'mode':>7} {'video tok':>10} {'prompt':>7} {'prefill ms':>11} {'stan/concat':>12}")
    ratios = {}
    for t in args.frames:
        pixels = torch.randn(1, t, 3, 336, 336, generator=torch.Generator().manual_seed(t)).to(device, dtype)
        features = {mode: graft.features(pixels, mode) for mode in ("stan", "concat")}
        inputs = {mode: prefill_inputs(f) for mode, f in features.items()}
        medians = time_modes(llava, inputs, args.repeats)
        ratios[t] = medians["stan"] / medians["concat"]
        for mode in ("stan", "concat"):
            ratio = f"{ratios[t]:.3f}" if mode == "stan" else ""
            print(f"{t:>3} {mode:>7} {features[mode].shape[1]:>10} {inputs[mode]['input_ids'].shape[1]:>7} "
                  f"{medians[mode] * 1e3:>11.1f} {ratio:>12}")
    if TARGET_T in ratios:
        verdict = "met" if ratios[TARGET_T] <= TARGET_RATIO else "NOT met"
        print(f"target: stan prefill <= {TARGET_RATIO} x concat at T = {TARGET_T}: {ratios[TARGET_T]:.3f} ({verdict})")

    ours = graft.token_count("stan", 1, 336, 336)
    print(f"\nvisual tokens per video reaching the LLM (stanchat here: {ours} with LLaVA-1.5's strategy "
          f"'default', which drops the CLS)")
    for name, tokens in PEERS:
        print(f"  {name:<36} {tokens:>6}  {tokens / ours:>5.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
