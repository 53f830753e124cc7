"""Mug, the paper's parameter-free mutual-guided frame<->word alignment, and the losses around it.

Mug-STAN (arXiv 2311.15075) Eq. 11-18 score a text against a video from per-token text features
c_j (j < N) and per-frame video features v_i (i < T), both L2-normalised:

    text-guided video   s_ij   = softmax_j(tau c_j.v_i)          (Eq. 11, over the text's tokens)
                        c_bar_i = sum_j s_ij c_j                   (Eq. 12)
                        s~_i   = softmax_i(tau c_bar_i.v_i)        (Eq. 13, over frames)
                        v~     = sum_i s~_i v_i                    (Eq. 14)
    video-guided text   s'_ij  = softmax_i(tau c_j.v_i)           (Eq. 15, over frames)
                        v_bar_j = sum_i s'_ij v_i                  (Eq. 16)
                        s~'_j  = softmax_j(tau c_j.v_bar_j)        (Eq. 17, over the text's tokens)
                        c~     = sum_j s~'_j c_j
    similarity          v~ . c~                                    (Eq. 18)

Every quantity above is a weighted sum of the dot products G_ij = c_j.v_i, so the scorer works on the
(N, T) matrix G per pair and never forms the (T, P) or (N, P) per-pair vectors c_bar, v_bar, v~, c~:
c_bar_i.v_i = sum_j s_ij G_ij, c_j.v_bar_j = sum_i s'_ij G_ij and v~.c~ = sum_ij s~_i s~'_j G_ij.
Scoring N_text x N_video pairs then costs N_text * N_video * N * T floats per intermediate instead of
... * P, and `chunk_size` bounds even that to chunk^2 * N * T.

Also here: `text_to_frame_weights` (the s~_i of one text over one video's frames, which frames a
question attends to), `mean_similarity` (the plain mean-pooled scorer), `contrastive_loss` (symmetric InfoNCE)
and `gather_features` (all_gather across DDP ranks for a global-batch loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MODES = ("full", "simple")


def mug_similarity(
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    video_frames: torch.Tensor,
    tau: float = 100.0,
    mode: str = "full",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Mug similarity of every text against every video (Eq. 11-18), shape (N_text, N_video), float32.

    Args:
        text_tokens: (N_text, N, P) per-token text features, normalised or not (normalised here).
        text_mask: (N_text, N) bool or 0/1 integers, 1 = real token, 0 = padding. Every text needs
            at least one real token. Padding features may hold anything, even NaN.
        video_frames: (N_video, T, P) per-frame video features, normalised or not.
        tau: the softmax temperature of Eq. 11, 13, 15, 17; CLIP's logit scale, 100.
        mode: "full" (the paper) or "simple" (the released code's cheaper variant), see below.
        chunk_size: None scores all pairs in one shot; an int scores blocks of at most
            chunk_size texts x chunk_size videos, so peak memory is O(chunk_size^2 * N * T)
            instead of O(N_text * N_video * N * T). Results are identical either way. Under autograd
            every block's intermediates are kept for backward, so the bound holds for eval
            (`torch.no_grad` / `torch.inference_mode`), which is where large N_text x N_video occur.

    Returns:
        (N_text, N_video) similarities in [-1, 1], float32 whatever the input dtype (softmaxes at
        tau = 100 need float32). Multiply by the logit scale before `contrastive_loss`.

    Modes:
        full: v~ . c~ exactly as in Eq. 18. v~ and c~ are NOT re-normalised: Eq. 18 is the plain
            dot product, and the released checkpoints were trained on that score. Both are convex
            combinations of unit vectors, so the score stays within [-1, 1] on the cosine scale that
            tau = 100 expects, and their norms shrink when attention spreads over dissimilar frames
            or tokens. With T = 1 and N = 1, v~ = v and c~ = c, so the score is the plain cosine.
        simple: the mean of the two guided logits, each pooled with the second-stage weights
            instead of forming v~ and c~:
                text-guided  = sum_i s~_i (c_bar_i . v_i)
                video-guided = sum_j s~'_j (c_j . v_bar_j)
                similarity   = (text-guided + video-guided) / 2
            It also equals the cosine when T = 1 and N = 1.

    Padding: padding tokens are masked everywhere, following the paper: they are excluded from the
    token softmaxes of Eq. 11 and Eq. 17, so they never receive weight in c_bar, s~' or c~, and their
    features are zeroed before use (garbage or NaN there cannot leak). The released code masks only
    the Eq. 11 softmax in full mode and lets padding tokens into the Eq. 17 softmax and so into c~;
    without padding the two agree exactly. In simple mode the released code's masking is effectively
    the same as here.

    Raises:
        ValueError: wrong ranks or shapes, an unknown mode, a bad chunk_size, a mask that is not
            bool/0-1 integers, or a text with no valid token.
    """
    _check_mug_inputs(text_tokens, text_mask, video_frames, mode, chunk_size)
    mask = text_mask.bool()
    # (N_text, N, P): padding zeroed before normalising so that no value stored there can leak
    text = F.normalize(torch.where(mask[..., None], text_tokens.float(), 0.0), dim=-1)
    video = F.normalize(video_frames.float(), dim=-1)  # (N_video, T, P)
    if chunk_size is None:
        return _mug_block(text, mask, video, tau, mode)
    n_text, n_video = text.shape[0], video.shape[0]
    scores = video.new_empty((n_text, n_video))
    for t0 in range(0, n_text, chunk_size):
        t1 = min(t0 + chunk_size, n_text)
        for v0 in range(0, n_video, chunk_size):
            v1 = min(v0 + chunk_size, n_video)
            scores[t0:t1, v0:v1] = _mug_block(text[t0:t1], mask[t0:t1], video[v0:v1], tau, mode)
    return scores


def text_to_frame_weights(
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    video_frames: torch.Tensor,
    tau: float = 100.0,
) -> torch.Tensor:
    """Which frames one text attends to: Mug's text-guided frame weights s~_i (Eq. 11-13, Fig. 10).

    Args:
        text_tokens: (N, P) per-token features of one text, normalised or not (normalised here).
        text_mask: (N,) bool or 0/1 integers, 1 = real token; at least one real token.
        video_frames: (T, P) per-frame features of one video, normalised or not.
        tau: the softmax temperature, CLIP's logit scale (100).

    Returns:
        (T,) float32 weights, non-negative and summing to 1: the weights that pool the frames into
        the text-guided video feature v~ of Eq. 14. The same values `mug_similarity` uses inside.
    """
    if text_tokens.dim() != 2 or video_frames.dim() != 2 or text_mask.dim() != 1:
        raise ValueError(f"expected text_tokens (N, P), text_mask (N,) and video_frames (T, P), got "
                         f"{tuple(text_tokens.shape)}, {tuple(text_mask.shape)} and {tuple(video_frames.shape)}")
    # one pair is a batch of one: the shape checks and the masking are mug_similarity's
    text_tokens, text_mask, video_frames = text_tokens[None], text_mask[None], video_frames[None]
    _check_mug_inputs(text_tokens, text_mask, video_frames, "full", None)
    mask = text_mask[0].bool()  # (N,)
    text = F.normalize(torch.where(mask[:, None], text_tokens[0].float(), 0.0), dim=-1)  # (N, P)
    video = F.normalize(video_frames[0].float(), dim=-1)  # (T, P)
    dots = text @ video.T  # (N, T): G_ij = c_j . v_i
    _, weights = _text_guided(dots, ~mask[:, None], tau)  # (T,)
    return weights


def _mug_block(text: torch.Tensor, mask: torch.Tensor, video: torch.Tensor, tau: float, mode: str) -> torch.Tensor:
    """Mug scores of normalised text (a, N, P) with padding zeroed, mask (a, N), video (b, T, P) -> (a, b)."""
    a, n, p = text.shape
    b, t, _ = video.shape
    # G[x, y, j, i] = c_j . v_i: one (a*N, P) x (P, b*T) matmul. (a*N, b*T) -> (a, N, b, T) -> (a, b, N, T)
    dots = (text.reshape(a * n, p) @ video.reshape(b * t, p).T).reshape(a, n, b, t).permute(0, 2, 1, 3)
    logits = tau * dots
    padding = ~mask[:, None, :]  # (a, 1, N), broadcasts over videos

    frame_scores, s_tilde = _text_guided(dots, padding[..., None], tau)  # (a, b, T) each

    # Eq. 15-17: each token attends over frames; c_j . v_bar_j = sum_i s'_ij G_ij
    s_prime = torch.softmax(logits, dim=3)  # (a, b, N, T); padding rows are never used below
    token_scores = (s_prime * dots).sum(dim=3)  # (a, b, N): c_j . v_bar_j
    s_tilde_prime = torch.softmax((tau * token_scores).masked_fill(padding, float("-inf")), dim=2)  # (a, b, N)

    if mode == "simple":
        text_guided = (s_tilde * frame_scores).sum(dim=2)  # (a, b)
        video_guided = (s_tilde_prime * token_scores).sum(dim=2)  # (a, b)
        return (text_guided + video_guided) / 2
    # Eq. 14, 16, 18: v~ . c~ = sum_j s~'_j (c_j . v~) with c_j . v~ = sum_i s~_i G_ij
    token_dot_v_tilde = (dots * s_tilde[:, :, None, :]).sum(dim=3)  # (a, b, N)
    return (s_tilde_prime * token_dot_v_tilde).sum(dim=2)  # (a, b)


def _text_guided(dots: torch.Tensor, padding: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 11-13 on dot products G (..., N, T) with `padding` (..., N, 1) True on padding tokens:
    each frame attends over the text's real tokens. Returns c_bar_i . v_i (..., T), which equals
    sum_j s_ij G_ij, and the frame weights s~_i (..., T)."""
    s = torch.softmax((tau * dots).masked_fill(padding, float("-inf")), dim=-2)  # (..., N, T), Eq. 11
    frame_scores = (s * dots).sum(dim=-2)  # (..., T): c_bar_i . v_i, Eq. 12 dotted with v_i
    return frame_scores, torch.softmax(tau * frame_scores, dim=-1)  # Eq. 13


def _check_mug_inputs(
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    video_frames: torch.Tensor,
    mode: str,
    chunk_size: int | None,
) -> None:
    """Raise ValueError naming what was expected when mug_similarity's inputs do not fit together."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size!r}")
    if text_tokens.dim() != 3:
        raise ValueError(f"text_tokens must be (N_text, N, P), got shape {tuple(text_tokens.shape)}")
    if video_frames.dim() != 3:
        raise ValueError(f"video_frames must be (N_video, T, P), got shape {tuple(video_frames.shape)}")
    if video_frames.shape[1] == 0:
        raise ValueError(f"video_frames needs at least one frame (T >= 1), got shape {tuple(video_frames.shape)}")
    if text_tokens.shape[2] != video_frames.shape[2]:
        raise ValueError(
            f"text_tokens and video_frames must share the feature width P, got text_tokens "
            f"{tuple(text_tokens.shape)} and video_frames {tuple(video_frames.shape)}"
        )
    if tuple(text_mask.shape) != tuple(text_tokens.shape[:2]):
        raise ValueError(
            f"text_mask must be (N_text, N) = {tuple(text_tokens.shape[:2])} to match text_tokens, "
            f"got shape {tuple(text_mask.shape)}"
        )
    _check_mask_values(text_mask)


def _check_mask_values(text_mask: torch.Tensor) -> None:
    """A mask is bool or 0/1 integers, with at least one real token per text."""
    if text_mask.dtype != torch.bool:
        if text_mask.is_floating_point() or text_mask.is_complex():
            raise ValueError(f"text_mask must be bool or 0/1 integers, got dtype {text_mask.dtype}")
        if not ((text_mask == 0) | (text_mask == 1)).all():
            raise ValueError("text_mask must hold only 0 (padding) and 1 (token), got other values")
    empty = (~text_mask.bool().any(dim=1)).nonzero().flatten().tolist()
    if empty:
        shown = ", ".join(str(i) for i in empty[:5]) + (", ..." if len(empty) > 5 else "")
        raise ValueError(f"text_mask rows [{shown}] have no valid token; every text needs at least one")


def mean_similarity(text_pooled: torch.Tensor, video_frames: torch.Tensor) -> torch.Tensor:
    """Plain mean-pooled cosine similarity, shape (N_text, N_video), float32.

    Args:
        text_pooled: (N_text, P) one feature per text (e.g. CLIP's EOS-token projection).
        video_frames: (N_video, T, P) per-frame features; averaged over T, then L2-normalised.

    The text features are L2-normalised here too, so the result is a cosine in [-1, 1]; multiply
    by the logit scale before `contrastive_loss`. With T = 1 this is CLIP's image-text cosine.
    """
    if text_pooled.dim() != 2:
        raise ValueError(f"text_pooled must be (N_text, P), got shape {tuple(text_pooled.shape)}")
    if video_frames.dim() != 3 or video_frames.shape[1] == 0:
        raise ValueError(f"video_frames must be (N_video, T, P) with T >= 1, got shape {tuple(video_frames.shape)}")
    if text_pooled.shape[1] != video_frames.shape[2]:
        raise ValueError(
            f"text_pooled and video_frames must share the feature width P, got text_pooled "
            f"{tuple(text_pooled.shape)} and video_frames {tuple(video_frames.shape)}"
        )
    text = F.normalize(text_pooled.float(), dim=-1)  # (N_text, P)
    video = F.normalize(video_frames.float().mean(dim=1), dim=-1)  # (N_video, T, P) -> (N_video, P)
    return text @ video.T


def contrastive_loss(logits_t2v: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a (B, B + E) text-to-video logit matrix whose first B columns hold the
    B videos, matched on the diagonal; the E further columns, if any, are extra negative videos
    (e.g. each clip played backwards) that only the text->video direction ranks.

    The logits already include the scale (logit_scale * similarity, e.g. 100 * cosine). Returns the
    mean of the text->video cross-entropy (over rows) and the video->text one (over the first B
    columns), each averaged over the batch; uniform logits give (ln(B + E) + ln B) / 2. The released
    code sums the two directions instead of averaging, which only doubles the loss.
    """
    if logits_t2v.dim() != 2 or logits_t2v.shape[0] > logits_t2v.shape[1] or logits_t2v.shape[0] == 0:
        raise ValueError(f"logits_t2v must be a non-empty (B, B + E) matrix, got shape {tuple(logits_t2v.shape)}")
    logits = logits_t2v.float()
    b = logits.shape[0]
    labels = torch.arange(b, device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, :b].T, labels)) / 2


def gather_features(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every DDP rank along dim 0, keeping the local shard's gradient.

    With torch.distributed not initialised (or a world of one) this returns `tensor` itself. Every
    rank must pass the same shape (use drop_last=True in the sampler); a mismatch raises ValueError.
    Bool tensors (masks) are supported. The result is rank-major: rows of rank 0, then rank 1, ...

    Why gradient flows only through the local part: all_gather copies values, not autograd graphs,
    so the other ranks' rows arrive as constants. They do not need a gradient here: every rank
    computes the same global-batch loss, and each rank's own backward already sends d(loss)/d(its
    rows) into its own encoder. DDP then averages the per-rank parameter gradients, so the update
    is the exact global-loss gradient divided by world_size (a constant factor, as in open_clip's
    gather without gradient; Adam-type optimisers are insensitive to it). Multiply the loss by
    world_size if the unscaled gradient is needed.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    if tensor.dim() == 0:
        raise ValueError("gather_features needs a tensor with a batch dimension, got a 0-d tensor")
    world, rank = dist.get_world_size(), dist.get_rank()
    _check_same_shape_on_all_ranks(tensor, world)
    sent = tensor.detach().contiguous()
    if sent.dtype == torch.bool:  # not every backend gathers bool; move it as bytes
        sent = sent.to(torch.uint8)
    parts = [torch.empty_like(sent) for _ in range(world)]
    dist.all_gather(parts, sent)
    parts = [part.to(tensor.dtype) for part in parts]
    parts[rank] = tensor  # the local shard keeps its autograd graph
    return torch.cat(parts, dim=0)  # (world * B, ...)


def _check_same_shape_on_all_ranks(tensor: torch.Tensor, world: int) -> None:
    """all_gather needs one shape everywhere; compare shapes first to fail clearly, not hang."""
    import torch.distributed as dist

    shape = torch.tensor(tensor.shape, dtype=torch.long, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(other, shape) for other in shapes):
        listed = [tuple(s.tolist()) for s in shapes]
        raise ValueError(f"gather_features needs the same shape on every rank, got {listed}; use drop_last=True")
