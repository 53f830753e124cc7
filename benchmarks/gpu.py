"""GPU suite: a LLaVA-1.5-7B-shaped stanchat with random weights, in bf16 and 4-bit, stan / mean / concat.

    python benchmarks/gpu.py                                 # a CUDA GPU: 7B and CLIP-L/14-336 shapes
    python benchmarks/gpu.py --toy --device cpu --dtype float32   # toy shapes on the CPU (the smoke test)
    python benchmarks/gpu.py --preset llava-v1-7b-lightening  # a preset: its real weights when they are on
                                                              # this machine (`stanchat pull`), else its shapes

`--preset NAME` measures that preset: loaded with `stanchat.load` (real weights, 4-bit through
`load_in_4bit`) when its weights are on disk and a GPU is there, otherwise a random model at that
preset's real shapes (`PRESET_SHAPES`: LLaVA-1.5 7B/13B, LLaVA v1 on the 224 px tower with its
single-linear projector, LLaVA-NeXT with its image_newline). The default is LLaVA-1.5-7B's shapes.

Builds from configs in code a LLaVA-1.5-7B-shaped model (Llama 32 x 4096, CLIP-L/14 at 336 px,
`vision_feature_layer` -2, strategy `default`) with random weights, since speed and memory do not
depend on the values, and grafts a random STAN (K = 4, ending at the feature layer). In bf16, and
with the LLM's linear layers in 4-bit NF4 (bitsandbytes; the tower, projector and lm_head stay in
bf16, as `stanchat.load(load_in_4bit=True)` leaves them), it measures for each frame count and mode:
the vision latency (tower + STAN + projector), the LLM prefill latency, decoding speed in tokens/s
(`generate` after its first token) and the peak memory of the whole answer, weights included
(`torch.cuda.max_memory_allocated`: the CUDA context, ~0.5 GiB, comes on top). Then, per mode, the
largest frame count whose vision + prefill peak stays under the budget (24 GiB), by doubling and
bisection up to --search-cap frames; the STAN's temporal embedding is built that long for the search
(the released Mug-STAN covers 64 frames), and the LLM's context is stretched to the longest prompt
(LLaVA-1.5's is 4096 tokens: `stanchat` refuses concat beyond 7 frames). Target: 7B in 4-bit with 16
frames (stan) under 8 GiB peak.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout: its stanchat and benchmarks

import torch  # noqa: E402
from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,  # noqa: E402
                          LlavaNextConfig, LlavaNextForConditionalGeneration)
from transformers.generation.streamers import BaseStreamer  # noqa: E402

from benchmarks.common import GIB, PeakMemory, cpu_name, interleaved, medians, parser, run  # noqa: E402
from benchmarks.prefill import TEXT_TOKENS, prefill_inputs  # noqa: E402
from benchmarks.results import Figure, Result, Target  # noqa: E402
from stanchat.chat import QUANT_SKIP_MODULES  # noqa: E402
from stanchat.graft import Graft  # noqa: E402
from stanchat.options import TEMPORAL_MODES as MODES  # noqa: E402  (every temporal mode is measured)
from stanchat.stan import STAN, STANConfig, end_layer_for_feature_layer  # noqa: E402

NO_GPU = "gpu.py: no GPU on this machine (CUDA is not available); run it where one is, or use --toy --device cpu"
TARGET = Target("<", 8.0)  # GiB: 7B in 4-bit with 16 frames
PRECISIONS = ("dense", "4bit")  # dense: every weight in --dtype; 4bit: the LLM's linear layers in NF4
DTYPE_NAMES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


@dataclass(frozen=True)
class Shape:
    """Model geometry, in LLaVA-1.5's terms."""

    llm_layers: int  # Llama decoder layers (7B: 32)
    llm_width: int  # hidden size (7B: 4096); 4-bit on the CPU needs multiples of 64
    llm_intermediate: int  # MLP width (7B: 11008)
    llm_heads: int  # attention heads (7B: 32)
    vocab: int  # vocabulary with <image> and padding (llava-hf 1.5: 32064)
    image_token: int  # id of <image> (llava-hf 1.5: 32000)
    vision_layers: int  # CLIP encoder layers (L/14: 24)
    vision_width: int  # CLIP width (L/14: 1024)
    vision_heads: int  # CLIP attention heads (L/14: 16)
    image_size: int  # input side in pixels (LLaVA-1.5: 336)
    patch_size: int  # (14): L = (image_size / patch_size)^2 patches per frame
    stan_depth: int  # K: STAN layers, ending at the feature layer (4)
    llm_kv_heads: int = 0  # key/value heads; 0: as many as llm_heads (Mistral 7B: 8)
    family: str = "llava"  # "llava" or "llava-next" (LLaVA-NeXT: image_newline after each image)
    projector: str = "mlp"  # "mlp" (Linear, GELU, Linear) or "linear" (LLaVA v1 as `stanchat convert llava` writes it)


SHAPES = {
    "7b": Shape(32, 4096, 11008, 32, 32064, 32000, 24, 1024, 16, 336, 14, 4),
    "toy": Shape(2, 64, 128, 4, 256, 250, 4, 64, 4, 28, 14, 2),
}
# each preset's real geometry, for random weights where its own are not on the machine
PRESET_SHAPES = {
    "llava-1.5-7b": SHAPES["7b"],
    "llava-1.5-13b": Shape(40, 5120, 13824, 40, 32064, 32000, 24, 1024, 16, 336, 14, 4),
    "llava-v1-7b-lightening": Shape(32, 4096, 11008, 32, 32003, 32000, 24, 1024, 16, 224, 14, 4, projector="linear"),
    "llava-next-vicuna-7b": Shape(32, 4096, 11008, 32, 32064, 32000, 24, 1024, 16, 336, 14, 4, family="llava-next"),
    "llava-next-mistral-7b": Shape(32, 4096, 14336, 32, 32064, 32000, 24, 1024, 16, 336, 14, 4, llm_kv_heads=8,
                                   family="llava-next"),
}


def llava_config(shape: Shape, context: int) -> LlavaConfig | LlavaNextConfig:
    """The LLaVA (or LLaVA-NeXT) config at `shape`, with `context` positions."""
    vision = CLIPVisionConfig(hidden_size=shape.vision_width, intermediate_size=4 * shape.vision_width,
                              num_hidden_layers=shape.vision_layers, num_attention_heads=shape.vision_heads,
                              image_size=shape.image_size, patch_size=shape.patch_size, hidden_act="quick_gelu")
    text = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.llm_width, intermediate_size=shape.llm_intermediate,
                       num_hidden_layers=shape.llm_layers, num_attention_heads=shape.llm_heads,
                       num_key_value_heads=shape.llm_kv_heads or shape.llm_heads, max_position_embeddings=context,
                       pad_token_id=0)
    config_class = LlavaNextConfig if shape.family == "llava-next" else LlavaConfig
    return config_class(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=shape.image_token,
                        vision_feature_layer=-2, vision_feature_select_strategy="default",
                        projector_hidden_act="linear" if shape.projector == "linear" else "gelu")


def quantize_4bit(llava: LlavaForConditionalGeneration, dtype: torch.dtype) -> int:
    """Swap every linear layer outside QUANT_SKIP_MODULES for a bitsandbytes NF4 one, in place (as
    `stanchat.load(load_in_4bit=True)` quantises); returns how many were swapped."""
    import bitsandbytes as bnb

    names = [name for name, module in llava.named_modules() if isinstance(module, torch.nn.Linear)
             and not any(name == skip or name.startswith(skip + ".") for skip in QUANT_SKIP_MODULES)]
    for name in names:
        linear = llava.get_submodule(name)
        quantized = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                      compute_dtype=dtype, compress_statistics=False, quant_type="nf4", device="meta")
        # Params4bit.to(device) quantises the bf16 weight on that device
        quantized.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, compress_statistics=False,
                                             quant_type="nf4", module=quantized).to(linear.weight.device)
        if linear.bias is not None:
            quantized.bias = linear.bias
        llava.set_submodule(name, quantized)
    return len(names)


def build(shape: Shape, precision: str, device: torch.device, dtype: torch.dtype, max_frames: int,
          context: int) -> Graft:
    """A random LLaVA at `shape` on `device` with a random STAN grafted; the LLM in 4-bit if asked."""
    config = llava_config(shape, context)
    end = end_layer_for_feature_layer(config.vision_feature_layer, shape.vision_layers)
    torch.manual_seed(0)
    with torch.device(device):  # initialise in place: 7B of random bf16 weights never pass through the CPU
        model_class = LlavaNextForConditionalGeneration if shape.family == "llava-next" else LlavaForConditionalGeneration
        llava = model_class._from_config(config, dtype=dtype).eval()
        stan = STAN(STANConfig(depth=shape.stan_depth, end_layer=end, max_frames=max_frames),
                    config.vision_config).to(dtype).eval()
    if precision == "4bit":
        quantize_4bit(llava, dtype)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the bf16 originals are gone
    return Graft(llava, stan)


class _FirstToken(BaseStreamer):
    """Notes when `generate` hands over its first new token: the prefill is over, decoding starts."""

    def __init__(self):
        self.puts, self.first_at = 0, None

    def put(self, value) -> None:
        self.puts += 1
        if self.puts == 2:  # the first put is the prompt
            self.first_at = time.perf_counter()

    def end(self) -> None:
        pass


def pixels(shape: Shape, frames: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, T, 3, H, W) random frames."""
    generator = torch.Generator().manual_seed(frames)
    return torch.randn(1, frames, 3, shape.image_size, shape.image_size, generator=generator).to(device, dtype)


def answer_once(graft: Graft, video: torch.Tensor, mode: str, new_tokens: int, image_token: int, mark: int) -> dict:
    """One whole answer (vision, prefill, `new_tokens` >= 2 decoding steps): decode tokens/s and the
    peak bytes over `mark` (the memory in use before the model was built: weights count)."""
    device = video.device
    memory = PeakMemory(device, mark)
    inputs = prefill_inputs(graft.llava, graft.features(video, mode))
    for key in ("logits_to_keep", "use_cache"):
        inputs.pop(key)
    clock = _FirstToken()
    with torch.inference_mode():
        graft.llava.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=0, streamer=clock)
    if device.type == "cuda":
        torch.cuda.synchronize()
    decoding = time.perf_counter() - clock.first_at
    return {"video_tokens": inputs["inputs_embeds"].shape[1] - TEXT_TOKENS, "tokens_per_s": (new_tokens - 1) / decoding,
            "peak_bytes": memory.peak()}


def time_modes(graft: Graft, video: torch.Tensor, repeats: int, image_token: int) -> dict[str, dict[str, float]]:
    """Median vision and prefill seconds per mode, the modes taking turns."""
    device = video.device
    with torch.inference_mode():
        vision = medians(interleaved({m: (lambda m=m: graft.features(video, m)) for m in MODES}, repeats, device))
        inputs = {m: prefill_inputs(graft.llava, graft.features(video, m)) for m in MODES}
        prefill = medians(interleaved({m: (lambda m=m: graft.llava(**inputs[m])) for m in MODES}, repeats, device))
    return {m: {"vision_s": vision[m], "prefill_s": prefill[m]} for m in MODES}


def largest_fitting(fits: Callable[[int], bool], cap: int) -> int:
    """The largest T in 1..cap with fits(T), for a `fits` that stays False once False (more frames
    never need less memory): doubling from 1, then bisection. 0 when one frame does not fit."""
    good, probe = 0, 1
    while fits(probe):  # invariant: fits(good) (or good == 0)
        good = probe
        if probe == cap:
            return cap
        probe = min(2 * probe, cap)
    bad = probe  # the first probe that did not fit
    while bad - good > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if fits(middle) else (good, middle)
    return good


def fits_under(graft: Graft, shape: Shape, mode: str, budget: int, mark: int, dtype: torch.dtype) -> Callable[[int], bool]:
    """fits(T): vision + prefill of T frames peaks at most `budget` bytes over `mark` (weights count)."""
    device = graft.vision.embeddings.patch_embedding.weight.device

    def fits(frames: int) -> bool:
        memory = PeakMemory(device, mark)
        try:
            with torch.inference_mode():
                graft.llava(**prefill_inputs(graft.llava, graft.features(pixels(shape, frames, device, dtype), mode)))
            return memory.peak() <= budget
        except torch.OutOfMemoryError:
            return False
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()

    return fits


def bench_shape(args: argparse.Namespace) -> Shape:
    """The geometry measured: --preset's real one (toy sizes of its family with --toy), else LLaVA-1.5-7B's."""
    if args.toy:
        family = PRESET_SHAPES[args.preset] if args.preset else SHAPES["toy"]
        return replace(SHAPES["toy"], family=family.family, projector=family.projector)
    return PRESET_SHAPES[args.preset] if args.preset else SHAPES["7b"]


def real_weights(args: argparse.Namespace, device: torch.device) -> bool:
    """Whether --preset's own weights are measured: they are on this machine and the device is a GPU."""
    if not args.preset or args.toy or device.type != "cuda":
        return False
    from stanchat.commands.models import status

    entry = status(args.preset)
    return entry["stan_present"] and entry["llava_present"]


def load_preset(name: str, precision: str, device: torch.device, dtype: torch.dtype) -> tuple[Graft, Shape]:
    """The preset's real model as `stanchat.load` loads it (4-bit: `load_in_4bit`), and its geometry."""
    import stanchat

    chat = stanchat.load(name, device=device, dtype=dtype, load_in_4bit=precision == "4bit")
    config = chat.llava.config
    text, vision = config.text_config, config.vision_config
    shape = Shape(text.num_hidden_layers, text.hidden_size, text.intermediate_size, text.num_attention_heads,
                  text.vocab_size, config.image_token_id, vision.num_hidden_layers, vision.hidden_size,
                  vision.num_attention_heads, vision.image_size, vision.patch_size, chat.graft.stan_config.depth,
                  text.num_key_value_heads, PRESET_SHAPES[name].family, PRESET_SHAPES[name].projector)
    return chat.graft, shape


def measure_precision(args: argparse.Namespace, precision: str, device: torch.device, dtype: torch.dtype) -> dict:
    """Every frame count and mode, then the search, for one precision (one model build or load)."""
    shape, cap = bench_shape(args), args.search_cap
    longest = max(max(args.frames), args.search_cap)
    mark = PeakMemory(device).current()  # before the build: peaks count the weights
    if real_weights(args, device):
        graft, shape = load_preset(args.preset, precision, device, dtype)
        cap = min(cap, graft.max_frames)  # the released STAN's temporal embedding covers 64 frames
    else:
        graft = build(shape, precision, device, dtype, longest, (shape.image_size // shape.patch_size) ** 2 * longest + 64)
    runs = []
    for frames in args.frames:
        video = pixels(shape, frames, device, dtype)
        times = time_modes(graft, video, args.repeats, shape.image_token)
        for mode in MODES:
            once = answer_once(graft, video, mode, args.new_tokens, shape.image_token, mark)
            runs.append({"precision": precision, "frames": frames, "mode": mode, **times[mode], **once})
    budget = int(args.budget_gib * GIB)
    largest = {mode: largest_fitting(fits_under(graft, shape, mode, budget, mark, dtype), cap) for mode in MODES}
    del graft
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"runs": runs, "largest": largest}


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--toy", action="store_true", help="toy shapes (2-layer Llama 64 wide, 28 px tower): the smoke test")
    p.add_argument("--preset", default=None, choices=sorted(PRESET_SHAPES),
                   help="measure this preset: its weights when on disk with a GPU, else random at its shapes")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--frames", type=int, nargs="+", default=[16, 64])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median reported)")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated for the tokens/s figure (>= 2)")
    p.add_argument("--budget-gib", type=float, default=24.0, help="memory budget of the frame-count search")
    p.add_argument("--search-cap", type=int, default=1024, help="largest frame count the search tries")
    return p


def measure(args: argparse.Namespace) -> Result:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(torch.get_num_threads())
    data = {"device": name, "runs": [], "largest": {}, "args": vars(args),
            "weights": "real" if real_weights(args, device) else "random"}
    for precision in args.precisions:
        measured = measure_precision(args, precision, device, dtype)
        data["runs"] += measured["runs"]
        data["largest"][precision] = measured["largest"]
    return _result(args, data)


def _result(args: argparse.Namespace, data: dict) -> Result:
    name = data["device"]
    shape = (f"{args.preset or 'LLaVA-1.5-7B'} toy shapes" if args.toy else
             f"preset {args.preset}" if args.preset else "LLaVA-1.5-7B + CLIP-L/14-336 shapes")
    result = Result("gpu", f"GPU: {shape}, {data['weights']} weights", data=data,
                    setup=f"{shape} ({data['weights']} weights), STAN K = {bench_shape(args).stan_depth} at layer -2, {args.dtype} "
                          f"compute on {name}; median of {args.repeats}; {args.new_tokens} new tokens")
    for run_ in data["runs"]:
        where = f"{label(run_['precision'], args.dtype)}, T = {run_['frames']}, {run_['mode']}"
        target = TARGET if (run_["precision"], run_["frames"], run_["mode"]) == ("4bit", 16, "stan") else None
        result.figures += [
            Figure(f"vision + prefill latency, {where}", run_["vision_s"] + run_["prefill_s"], "s", device=name,
                   detail=f"vision {run_['vision_s']:.3f} s, prefill {run_['prefill_s']:.3f} s, "
                          f"{run_['video_tokens']} video tokens"),
            Figure(f"decoding speed, {where}", run_["tokens_per_s"], "tokens/s", device=name),
            Figure(f"peak memory, {where}", run_["peak_bytes"] / GIB, "GiB", target, device=name)]
    for precision, largest in data["largest"].items():
        for mode, frames in largest.items():
            capped = " (the search cap)" if frames == args.search_cap else ""
            result.figures.append(Figure(f"largest frame count under {args.budget_gib:g} GiB, "
                                         f"{label(precision, args.dtype)}, {mode}",
                                         frames, "frames", device=name, detail=f"vision + prefill{capped}"))
    return result


def label(precision: str, dtype: str) -> str:
    """"bf16" (or fp16, fp32) for a dense model, "4-bit" for the NF4 LLM."""
    return DTYPE_NAMES[dtype] if precision == "dense" else "4-bit"


def report(result: Result) -> None:
    print(f"GPU suite: {result.setup}")
    print(f"{'precision':<9} {'T':>4} {'mode':<7} {'video tok':>9} {'vision s':>9} {'prefill s':>10} "
          f"{'tokens/s':>9} {'peak GiB':>9}")
    for r in result.data["runs"]:
        print(f"{label(r['precision'], result.data['args']['dtype']):<9} {r['frames']:>4} {r['mode']:<7} {r['video_tokens']:>9} {r['vision_s']:>9.3f} "
              f"{r['prefill_s']:>10.3f} {r['tokens_per_s']:>9.1f} {r['peak_bytes'] / GIB:>9.2f}")
    result.print_figures()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    return run(build_parser(), measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
