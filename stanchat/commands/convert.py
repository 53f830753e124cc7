"""Convert weights into a stanchat model directory (config.json + model.safetensors).

`official`: the authors' released Mug-STAN checkpoint (e.g. Mug-StanL14.bin); every weight, CLIP
towers included, comes from the checkpoint, and --clip supplies only the architecture config (its
tokenizer and processor files are copied alongside). `open-clip`: an open_clip model (LAION or
OpenAI weights by tag) with a fresh STAN branch, ready for post-pretraining: CLIP models become a
VideoCLIP (weights translated into HF CLIP), CoCa models (e.g. coca_ViT-L-14) a CoCaVideoCLIP
(open_clip's own towers; the captioning decoder is left out). Read either back with
`stanchat.architectures.load_video_model`. `llava`: an original-layout LLaVA v1 (LlavaLlamaForCausalLM,
e.g. mmaaz60/LLaVA-7B-Lightening-v1-1) into a transformers LlavaForConditionalGeneration directory
with its processor and chat template (`stanchat ask --llava DIR` reads it).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    official = sub.add_parser("official", help="the released mmaction checkpoint (e.g. Mug-StanL14.bin)")
    official.add_argument("checkpoint", help="path to the released .bin/.pth file")
    official.add_argument("--clip", required=True, help="HF CLIP hub id or local dir: supplies only the architecture config")
    official.add_argument("--out", required=True, help="output directory (safetensors + config)")
    official.add_argument("--depth", type=int, default=None, help="STAN depth K (default: read from the checkpoint)")
    oc = sub.add_parser("open-clip", help="an open_clip CLIP or CoCa model with a fresh STAN branch")
    oc.add_argument("model", help="open_clip model name, e.g. ViT-L-14 or coca_ViT-L-14")
    oc.add_argument("--pretrained", default=None, help="open_clip pretrained tag or checkpoint file (default: random weights)")
    oc.add_argument("--out", required=True, help="output directory (safetensors + config)")
    oc.add_argument("--depth", type=int, default=4, help="STAN depth K")
    v1 = sub.add_parser("llava", help="an original-layout LLaVA v1 (LlavaLlamaForCausalLM) -> transformers LLaVA")
    v1.add_argument("src", metavar="SRC", help="directory or hub id of the original LLaVA v1 checkpoint")
    v1.add_argument("--out", required=True, help="output directory (transformers LLaVA + processor)")
    v1.add_argument("--clip", default=None, help="CLIP tower hub id or dir (default: the checkpoint's mm_vision_tower)")


def run(args: argparse.Namespace) -> int:
    if args.source == "official":
        from stanchat.convert import convert_official

        out = convert_official(args.checkpoint, clip=args.clip, out=args.out, depth=args.depth)
    elif args.source == "llava":
        from stanchat.convert import convert_llava_v1

        out = convert_llava_v1(args.src, out=args.out, clip=args.clip)
    else:
        from stanchat.errors import StanchatError
        from stanchat.stan import STANConfig
        from stanchat.convert import video_model_from_open_clip

        try:
            stan = STANConfig(depth=args.depth)
        except ValueError as err:
            raise StanchatError(f"--depth: {err}") from err
        model = video_model_from_open_clip(args.model, args.pretrained, stan)
        out = model.save_pretrained(args.out)
    print(f"wrote {out}")
    return 0
