"""Stage 3 of the tiny recipe: a LLaVA taught on still images only, never on video.

transformers' `LlavaForConditionalGeneration` is built from configs: the stage-1 CLIP vision tower
(frozen, read at `vision_feature_layer=-2`, strategy `default`), LLaVA's projector and a small Llama
trained from scratch, with a word-level tokenizer over the synthetic world's words. It learns from
(still image, question, answer) triples; the loss covers only the answer tokens and `</s>`. A still
shows a motion as a fading trail behind the shape (`render_still`), so the image model has words
for motion ("a red circle moves left") without ever seeing a video.

The tower is frozen, so its features are computed once for all stills and cached; each step runs
the projector and the LLM, and passes the projected features through transformers' own
input embeddings by `stanchat.graft.place_video`, exactly how the engine feeds video features at inference.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stanchat.pretrained import LLAVA_15_CHAT_TEMPLATE

logger = logging.getLogger(__name__)

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "<image>")  # ids 0..4
DESCRIBE = ("What happens in this image?", "What happens in this video?", "Describe what happens.")
CHAT_WORDS = ("user", "assistant", ":", "system")  # what the template adds around the turns


@dataclass
class LlavaTrainConfig:
    """Stage 3: the tiny LLaVA's size and its still-image instruction tuning."""

    stills: int = 3000  # distinct still images (specs drawn by seed, held-out triples excluded)
    width: int = 128  # Llama hidden size
    layers: int = 2  # Llama decoder layers
    heads: int = 4  # Llama attention heads
    context: int = 256  # max_position_embeddings of the Llama
    steps: int = 1500  # optimizer steps
    batch_size: int = 32  # (still, question, answer) triples per step
    lr: float = 1e-3  # AdamW peak lr (projector and LLM), linear warmup then cosine to zero
    warmup: float = 0.05  # fraction of the steps with linear warmup
    weight_decay: float = 0.01  # AdamW decay
    feature_noise: float = 0.0  # std of Gaussian noise added to the stills' tower features in training, relative to their RMS: an LLM taught on few stills then tolerates tokens a little off them (the graft's)
    short_answer_prob: float = 0.5  # chance a short question gets the eval's "single word or phrase" suffix
    seed: int = 0  # specs, question choice and batch order


def conversations(spec) -> list[tuple[str, str]]:
    """(question, answer) pairs about a one-event still: what happens (the event in words, template 0)
    and the synthetic world's own QA pairs (direction, colour, size change, shape)."""
    from training.synthworld import event_sentence, qa_pairs

    describe = event_sentence(spec.events[0], 0)
    return [*((q, describe) for q in DESCRIBE), *qa_pairs(spec)]


def vocabulary(config) -> list[str]:
    """Every word the stills' conversations, the eval prompt and the chat template can hold, in a
    fixed order: the world's caption words first, then question words."""
    from stanchat.eval.config import SHORT_ANSWER
    from training.synthworld import MOTIONS, Actor, ClipSpec, Event
    from training.tiny_backbone import world_words

    actors = [Actor(c, s) for c in config.colours for s in config.shapes]
    specs = [ClipSpec("v", (Event(m, (a,)),), 0) for a in actors for m in MOTIONS if m != "appear"]
    texts = [*CHAT_WORDS, SHORT_ANSWER, *(f"{q} {a}" for s in specs for q, a in conversations(s))]
    words = (w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower()))
    return list(dict.fromkeys([*world_words(), *words]))


def chat_tokenizer(words: list[str]):
    """Word-level, lower-cased; `<s>` prepended like Llama; `<image>` special; decodes words joined
    by spaces (every answer is lower-case words)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIALS, *[w for w in words if w not in SPECIALS]])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})


def build_processor(tokenizer, image_size: int, patch_size: int, strategy: str = "default"):
    """LlavaProcessor: CLIP image processing at the tower's size, the tokenizer, LLaVA-1.5's template."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy=strategy, chat_template=LLAVA_15_CHAT_TEMPLATE)


def build_llava(clip_dir: str | Path, tokenizer, config: LlavaTrainConfig, feature_layer: int = -2,
                strategy: str = "default"):
    """A LLaVA whose vision tower holds the CLIP's vision weights (checked key by key) and whose
    projector and Llama are freshly initialised from `config.seed`; it reads tower layer
    `feature_layer` with `strategy` (LLaVA-1.5: -2, default)."""
    from transformers import CLIPModel, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    clip = CLIPModel.from_pretrained(str(clip_dir))
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=config.width, intermediate_size=4 * config.width,
                       num_hidden_layers=config.layers, num_attention_heads=config.heads,
                       num_key_value_heads=config.heads, max_position_embeddings=config.context,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    llava_config = LlavaConfig(vision_config=clip.config.vision_config.to_dict(), text_config=text.to_dict(),
                               image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                               vision_feature_layer=feature_layer, vision_feature_select_strategy=strategy)
    torch.manual_seed(config.seed)
    model = LlavaForConditionalGeneration(llava_config)
    tower = model.model.vision_tower
    result = tower.load_state_dict(clip.vision_model.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"CLIP vision weights do not fit the LLaVA tower: missing {result.missing_keys[:3]}, "
                           f"unexpected {result.unexpected_keys[:3]}")
    tower.requires_grad_(False)
    return model


def still_features(model, processor, images: np.ndarray, stan=None, batch: int = 256) -> torch.Tensor:
    """The tower features LLaVA reads for each still, before the projector: uint8 (N, H, W, 3) ->
    (N, L, D). They come from `stanchat.graft.Graft` at T = 1, the code path videos take: plain
    tower features (`mean`: stock LLaVA image features), or with a STAN the grafted encoder's
    (`stan`), so that images reach the LLM exactly as videos will."""
    from stanchat.graft import Graft
    from stanchat.video import Preprocessor

    graft, preprocess = Graft(model, stan), Preprocessor.from_image_processor(processor.image_processor)
    out = []
    for start in range(0, len(images), batch):
        pixels = preprocess(list(images[start:start + batch, None]))  # (b, 1, 3, H, W): one-frame clips
        out.append(graft.vision_tokens(pixels, "mean" if stan is None else "stan"))  # (b, L, D)
    return torch.cat(out)


def encode_turn(processor, question: str, answer: str, image_tokens: int) -> tuple[list[int], list[int]]:
    """input ids and labels of one turn: the chat-template prompt with the `<image>` placeholder
    expanded to `image_tokens`, then the answer and `</s>`; labels are -100 except on the answer."""
    tokenizer = processor.tokenizer
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}], add_generation_prompt=True)
    prompt = prompt.replace(processor.image_token, processor.image_token * image_tokens)
    prompt_ids = tokenizer(prompt)["input_ids"]  # <s> first
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def make_examples(specs, processor, image_tokens: int, config: LlavaTrainConfig) -> list[tuple[int, list[int], list[int]]]:
    """(still index, input ids, labels) for every conversation of every still; short questions get
    the evaluation's short-answer suffix with probability `short_answer_prob`."""
    from stanchat.eval.config import SHORT_ANSWER

    rng = np.random.default_rng(config.seed)
    examples = []
    for i, spec in enumerate(specs):
        for question, answer in conversations(spec):
            if question not in DESCRIBE and rng.random() < config.short_answer_prob:
                question = SHORT_ANSWER.format(question=question)
            examples.append((i, *encode_turn(processor, question, answer, image_tokens)))
    return examples


def collate(examples, features: torch.Tensor, pad_id: int) -> dict:
    """Right-padded batch: input_ids, attention_mask, labels (B, S) and the stills' features (B, L, D)."""
    length = max(len(ids) for _, ids, _ in examples)
    ids = torch.full((len(examples), length), pad_id)
    labels = torch.full((len(examples), length), -100)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, (_, x, y) in enumerate(examples):
        ids[row, :len(x)], labels[row, :len(y)], mask[row, :len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "features": features[[i for i, _, _ in examples]]}


def llava_loss(model, batch: dict) -> torch.Tensor:
    """Next-token loss on the answers, the still features projected and placed as at inference (`place_video`)."""
    from stanchat.graft import place_video

    projected = model.model.multi_modal_projector(batch["features"])  # (B, L, D) -> (B, L, E)
    return model(inputs_embeds=place_video(model, batch["input_ids"], projected),
                 attention_mask=batch["attention_mask"], labels=batch["labels"]).loss


def train_llava(clip_dir: str | Path, out_dir: str | Path, specs, world, config: LlavaTrainConfig,
                feature_layer: int = -2, strategy: str = "default", stan_dir: str | Path | None = None) -> Path:
    """Build, train and save the stage-3 LLaVA (model and processor) into `out_dir`; returns it.
    With `stan_dir` (a VideoCLIP on the same CLIP) the stills are encoded by the grafted encoder."""
    from transformers import get_cosine_schedule_with_warmup

    from training.synthworld import render_still

    tokenizer = chat_tokenizer(vocabulary(world))
    model = build_llava(clip_dir, tokenizer, config, feature_layer, strategy)
    vision = model.config.vision_config
    processor = build_processor(tokenizer, vision.image_size, vision.patch_size, strategy)
    images = np.stack([render_still(s, world) for s in specs])  # (N, H, W, 3)
    stan = None
    if stan_dir is not None:
        from stanchat.graft import load_graft_model

        stan = load_graft_model(stan_dir).stan.eval()
    features = still_features(model, processor, images, stan)  # (N, L, D), computed once: all of it is frozen
    examples = make_examples(specs, processor, features.shape[1], config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = get_cosine_schedule_with_warmup(optimizer, int(config.warmup * config.steps), config.steps)
    order = torch.Generator().manual_seed(config.seed)
    noise = config.feature_noise * features.square().mean().sqrt()  # absolute std
    model.train()
    for step in range(1, config.steps + 1):
        picks = torch.randint(len(examples), (config.batch_size,), generator=order).tolist()
        batch = collate([examples[i] for i in picks], features, tokenizer.pad_token_id)
        if noise > 0:  # drawn from `order` too, so a run stays a pure function of the seed
            batch["features"] = batch["features"] + noise * torch.randn(batch["features"].shape, generator=order)
        loss = llava_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step(), schedule.step(), optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == config.steps:
            logger.info("llava step %d/%d loss %.4f", step, config.steps, loss.item())
    model.eval()
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
