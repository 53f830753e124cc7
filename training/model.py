"""Build the model and tokenizer a run trains: a fresh STAN on a CLIP, any saved stanchat model to
finetune (a VideoCLIP or a CoCaVideoCLIP, as `stanchat convert` or `save_pretrained` wrote it,
read by `load_video_model`), or a checkpoint to resume; then decide which weights train.

The backbone's own `logit_scale` never trains, whatever the config: Mug-STAN keeps tau fixed at 100
(`config.logit_scale`), and DDP refuses parameters that get no gradient.
"""

from __future__ import annotations

from pathlib import Path

from stanchat.architectures import load_video_model
from stanchat.openclip_tokenizer import open_clip_name
from stanchat.videoclip import VideoCLIP
from stanchat.videomodel import VideoTextModel, has_text_tokenizer, load_text_tokenizer
from training.config import TrainConfig
from training.tiny_backbone import TINY, write_tiny_backbone


def build_model(config: TrainConfig, resume_dir: Path | None) -> tuple[VideoTextModel, object]:
    """The model to train and its tokenizer, with frozen parts and checkpointing applied."""
    model_config = config.model
    if resume_dir is not None:  # the checkpoint is a complete model directory
        model, tokenizer_dir = load_video_model(resume_dir), resume_dir
    elif model_config.pretrained:
        model = load_video_model(model_config.pretrained)
        tokenizer_dir = Path(model_config.pretrained)
        if not has_text_tokenizer(tokenizer_dir) and open_clip_name(model.config.source) is None:
            tokenizer_dir = backbone_dir(model_config.clip, config.run.output_dir)  # else open_clip's own
    else:
        clip_dir = backbone_dir(model_config.clip, config.run.output_dir)
        model, tokenizer_dir = VideoCLIP.from_clip_pretrained(str(clip_dir), model_config.stan), clip_dir
    tokenizer = load_text_tokenizer(tokenizer_dir, model.config.source)
    set_trainable(model, freeze_clip=model_config.freeze_clip,
                  freeze_text=model_config.freeze_text or config.task == "recognition")
    model.set_gradient_checkpointing(model_config.gradient_checkpointing)
    return model, tokenizer


def backbone_dir(clip: str, output_dir: str) -> Path:
    """A local directory for `model.clip`: the built-in tiny backbone (written once into
    output_dir), a directory, or a hub id from the cache."""
    from stanchat.hub import resolve_model_dir

    if clip == TINY:
        directory = Path(output_dir) / "tiny-clip"
        if not has_text_tokenizer(directory):
            write_tiny_backbone(directory)
        return directory
    return resolve_model_dir(clip, "CLIP model")


def set_trainable(model: VideoTextModel, freeze_clip: bool, freeze_text: bool) -> None:
    """requires_grad for every weight: STAN always trains; see the module docstring for the rest."""
    model.requires_grad_(True)
    if freeze_clip:
        model.freeze_clip()
    if freeze_text:
        model.freeze_text()
    model.freeze_logit_scale()


def count_parameters(model: VideoTextModel) -> dict[str, int]:
    """Trainable and total parameter counts, for the start-of-run log line."""
    params = list(model.parameters())
    return {"trainable": sum(p.numel() for p in params if p.requires_grad), "total": sum(p.numel() for p in params)}
