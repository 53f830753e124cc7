"""The built-in tiny backbone (`model.clip: tiny`): a random CLIP small enough to train on a laptop
CPU in seconds, and a word-level tokenizer over the synthetic world's vocabulary.

It exists for tests, smoke runs and benchmarks; its numbers say nothing about real CLIPs.
"""

from __future__ import annotations

from pathlib import Path

TINY = "tiny"
SPECIAL = ("<pad>", "<unk>", "<bos>", "<eos>")  # ids 0..3
GLUE = ("a", "an", "the", "of", "video", "person", "in", "and", "then", ".", "?")  # prompt words ("a video of {}.")


def world_words() -> list[str]:
    """Every word the synthetic world writes in captions, paragraphs, class names and noise, in a
    fixed order: each (colour, shape, motion) event in every paraphrase template, plus glue words.
    Anything else tokenises as <unk>, so real captions still work."""
    import re

    from training.synthworld import MOTION_CLASSES, MOTIONS, NOISE_WORDS, TEMPLATES, Actor, Event, event_sentence
    from training.synthworld.world import COLOURS, SHAPES

    actors = [Actor(c, s) for c in COLOURS for s in SHAPES]
    texts = [event_sentence(Event(m, (a, actors[0])), t) for a in actors for m in MOTIONS for t in range(TEMPLATES)]
    texts += [*MOTION_CLASSES.values(), *NOISE_WORDS, *GLUE]
    words = (w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower()))
    return list(dict.fromkeys(words))


def write_tiny_backbone(directory: str | Path, seed: int = 0, image_size: int = 16, patch_size: int = 8,
                        vision_layers: int = 4, max_tokens: int = 32) -> Path:
    """Write a random CLIP (width 32, `vision_layers` vision layers, 2 text layers, projection 24) and
    its tokenizer into `directory`, loadable with `CLIPModel.from_pretrained` / `AutoTokenizer`."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    directory = Path(directory)
    tokenizer = tiny_tokenizer(max_tokens)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=max_tokens, projection_dim=24,
                pad_token_id=0, bos_token_id=2, eos_token_id=3)  # eos != 2: HF pools at the first EOS
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=vision_layers, num_attention_heads=4,
                  image_size=image_size, patch_size=patch_size, projection_dim=24)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_tokenizer(max_tokens: int = 32):
    """Lower-cased whitespace/punctuation split, one id per known word, `<bos> ... <eos>` around."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIAL, *world_words()])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>", model_max_length=max_tokens)
