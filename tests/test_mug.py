"""Mug alignment, mean pooling, symmetric InfoNCE and the DDP gather."""

import math

import pytest
import torch
import torch.nn.functional as F

from stanchat.mug import contrastive_loss, gather_features, mean_similarity, mug_similarity, text_to_frame_weights
from tests.floats import FLOAT32, FLOAT32_APPROX

MODES = ["full", "simple"]


def _inputs(n_text=4, n_video=3, n_tokens=6, n_frames=5, width=16, seed=0):
    """Unnormalised features and a mask with one text of every length from 1 up (rest full)."""
    gen = torch.Generator().manual_seed(seed)
    text = torch.randn(n_text, n_tokens, width, generator=gen)
    video = torch.randn(n_video, n_frames, width, generator=gen)
    lengths = [min(1 + i * 2, n_tokens) for i in range(n_text)]
    mask = torch.tensor([[1] * n + [0] * (n_tokens - n) for n in lengths])
    return text, mask, video


# ---- an independent reference: the equations as written, explicit loops over python floats ----


def _unit(vec):
    norm = math.sqrt(sum(x * x for x in vec))
    return [x / norm for x in vec]


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _softmax(xs):
    top = max(xs)
    exps = [math.exp(x - top) for x in xs]
    return [e / sum(exps) for e in exps]


def _weighted_sum(weights, vectors):
    return [sum(w * vec[k] for w, vec in zip(weights, vectors)) for k in range(len(vectors[0]))]


def _reference_pair(tokens, frames, tau, mode):
    """Eq. 11-18 for one (text, video) pair; tokens are the real ones only, all unit vectors."""
    # text-guided video, Eq. 11-14
    s = [_softmax([tau * _dot(c, v) for c in tokens]) for v in frames]  # s[i][j]
    c_bar = [_weighted_sum(s[i], tokens) for i in range(len(frames))]
    s_tilde = _softmax([tau * _dot(c_bar[i], v) for i, v in enumerate(frames)])
    v_tilde = _weighted_sum(s_tilde, frames)
    # video-guided text, Eq. 15-17
    s_prime = [_softmax([tau * _dot(c, v) for v in frames]) for c in tokens]  # s_prime[j][i]
    v_bar = [_weighted_sum(s_prime[j], frames) for j in range(len(tokens))]
    s_tilde_prime = _softmax([tau * _dot(c, v_bar[j]) for j, c in enumerate(tokens)])
    c_tilde = _weighted_sum(s_tilde_prime, tokens)
    if mode == "full":
        return _dot(v_tilde, c_tilde)  # Eq. 18
    text_guided = sum(w * _dot(c_bar[i], v) for i, (w, v) in enumerate(zip(s_tilde, frames)))
    video_guided = sum(w * _dot(c, v_bar[j]) for j, (w, c) in enumerate(zip(s_tilde_prime, tokens)))
    return (text_guided + video_guided) / 2


def _reference(text, mask, video, tau, mode):
    out = torch.empty(text.shape[0], video.shape[0], dtype=torch.float64)
    for a in range(text.shape[0]):
        tokens = [_unit(text[a, j].tolist()) for j in range(text.shape[1]) if mask[a, j]]
        for b in range(video.shape[0]):
            frames = [_unit(video[b, i].tolist()) for i in range(video.shape[1])]
            out[a, b] = _reference_pair(tokens, frames, tau, mode)
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tau", [100.0, 3.0])
def test_matches_explicit_loops(mode, tau):
    text, mask, video = _inputs(n_text=3, n_video=2, n_tokens=4, n_frames=3, width=5)
    expected = _reference(text, mask, video, tau, mode)
    got = mug_similarity(text, mask, video, tau=tau, mode=mode)
    assert got.dtype == torch.float32 and got.shape == (3, 2)
    torch.testing.assert_close(got.double(), expected, **FLOAT32)


@pytest.mark.parametrize("mode", MODES)
def test_closed_form_one_token_two_frames(mode):
    # c = e1, frames e1 and e2: every step reduces to score = sum_i softmax_i(tau c.v_i) (c.v_i) = sigmoid(tau)
    text = torch.tensor([[[1.0, 0.0]]])
    video = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    got = mug_similarity(text, torch.ones(1, 1, dtype=torch.bool), video, tau=2.0, mode=mode)
    assert got.item() == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_single_frame_single_token_is_cosine(mode):
    text, _, video = _inputs(n_text=5, n_video=4, n_tokens=1, n_frames=1)
    mask = torch.ones(5, 1, dtype=torch.long)
    cosine = F.normalize(text[:, 0], dim=-1) @ F.normalize(video[:, 0], dim=-1).T
    torch.testing.assert_close(mug_similarity(text, mask, video, mode=mode), cosine, **FLOAT32)
    torch.testing.assert_close(mean_similarity(text[:, 0], video), cosine, **FLOAT32)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tau", [100.0, 3.0])
@pytest.mark.parametrize("garbage", ["random", "nan"])
def test_padding_never_changes_a_score(mode, tau, garbage):
    # tau = 3 matters: at tau = 100 a leaked padding weight exp(0) is lost against exp(100 * score)
    text, mask, video = _inputs()
    before = mug_similarity(text, mask, video, tau=tau, mode=mode)
    # overwrite existing padding and append 5 more padded tokens, all garbage
    fill = torch.full_like if garbage == "nan" else lambda t, _: 50 * torch.randn_like(t)
    padded = torch.cat([text, torch.empty(text.shape[0], 5, text.shape[2])], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(mask.shape[0], 5, dtype=mask.dtype)], dim=1)
    padded = torch.where(padded_mask.bool()[..., None], padded, fill(padded, float("nan")))
    after = mug_similarity(padded, padded_mask.bool(), video, tau=tau, mode=mode)
    torch.testing.assert_close(after, before, **FLOAT32)


@pytest.mark.parametrize("mode", MODES)
def test_padding_gets_no_gradient(mode):
    text, mask, video = _inputs()
    text.requires_grad_(True)
    mug_similarity(text, mask, video, mode=mode).sum().backward()
    assert torch.isfinite(text.grad).all()
    assert (text.grad[~mask.bool()] == 0).all()
    assert (text.grad[mask.bool()].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 100])
def test_chunked_equals_one_shot(mode, chunk_size):
    text, mask, video = _inputs(n_text=7, n_video=5)
    one_shot = mug_similarity(text, mask, video, mode=mode)
    chunked = mug_similarity(text, mask, video, mode=mode, chunk_size=chunk_size)
    torch.testing.assert_close(chunked, one_shot, **FLOAT32)


def test_chunked_keeps_gradients():
    text, mask, video = _inputs(n_text=5, n_video=4)
    grads = []
    for chunk_size in (None, 2):
        leaf = video.clone().requires_grad_(True)
        mug_similarity(text, mask, leaf, chunk_size=chunk_size).pow(2).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[1], grads[0], **FLOAT32)


@pytest.mark.parametrize("mode", MODES)
def test_normalises_inside(mode):
    text, mask, video = _inputs()
    gen = torch.Generator().manual_seed(1)
    scaled_text = text * (0.1 + 10 * torch.rand(*text.shape[:2], 1, generator=gen))
    scaled_video = video * (0.1 + 10 * torch.rand(*video.shape[:2], 1, generator=gen))
    torch.testing.assert_close(
        mug_similarity(scaled_text, mask, scaled_video, mode=mode),
        mug_similarity(text, mask, video, mode=mode),
        **FLOAT32,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_score_in_float32(dtype):
    text, mask, video = _inputs()
    text, video = text.to(dtype), video.to(dtype)
    got = mug_similarity(text, mask, video)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, mug_similarity(text.float(), mask, video.float()), **FLOAT32)


def test_full_and_simple_differ():
    text, mask, video = _inputs()
    full = mug_similarity(text, mask, video, tau=3.0)
    assert not torch.allclose(full, mug_similarity(text, mask, video, tau=3.0, mode="simple"))


@pytest.mark.parametrize(
    "text_shape, mask_shape, video_shape, kwargs, message",
    [
        ((2, 3), (2, 3), (4, 2, 8), {}, r"text_tokens must be \(N_text, N, P\)"),
        ((2, 3, 8), (2, 3), (2, 8), {}, r"video_frames must be \(N_video, T, P\)"),
        ((2, 3, 8), (2, 3), (4, 0, 8), {}, "at least one frame"),
        ((2, 3, 8), (2, 3), (4, 2, 7), {}, "feature width P"),
        ((2, 3, 8), (2, 4), (4, 2, 8), {}, r"text_mask must be \(N_text, N\) = \(2, 3\)"),
        ((2, 3, 8), (2, 3), (4, 2, 8), {"mode": "fancy"}, r"mode must be one of \['full', 'simple'\]"),
        ((2, 3, 8), (2, 3), (4, 2, 8), {"chunk_size": 0}, "chunk_size must be None or a positive int"),
    ],
)
def test_bad_shapes_raise(text_shape, mask_shape, video_shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mask = torch.ones(mask_shape, dtype=torch.bool)
        mug_similarity(torch.randn(text_shape), mask, torch.randn(video_shape), **kwargs)


def test_bad_masks_raise():
    text, video = torch.randn(3, 4, 8), torch.randn(2, 2, 8)
    with pytest.raises(ValueError, match="bool or 0/1 integers, got dtype torch.float32"):
        mug_similarity(text, torch.ones(3, 4), video)
    with pytest.raises(ValueError, match="only 0 .* and 1"):
        mug_similarity(text, torch.full((3, 4), 2), video)
    empty_row = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"rows \[1\] have no valid token"):
        mug_similarity(text, empty_row, video)


def test_mean_similarity_pools_then_normalises():
    text, _, video = _inputs()
    pooled = text[:, 0]
    expected = torch.stack([torch.stack([F.cosine_similarity(t, v.mean(0), dim=0) for v in video]) for t in pooled])
    torch.testing.assert_close(mean_similarity(pooled, video), expected, **FLOAT32)
    with pytest.raises(ValueError, match="feature width P"):
        mean_similarity(pooled, torch.randn(2, 3, 5))


@pytest.mark.parametrize("batch", [1, 2, 7, 64])
def test_loss_is_ln_b_for_uniform_logits(batch):
    assert contrastive_loss(torch.zeros(batch, batch)).item() == pytest.approx(math.log(batch), rel=1e-5, abs=1e-5)
    assert contrastive_loss(torch.full((batch, batch), 3.5)).item() == pytest.approx(math.log(batch), rel=1e-5, abs=1e-5)


def test_loss_is_mean_of_both_directions():
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(0)) * 4
    rows = -torch.log_softmax(logits, dim=1).diagonal().mean()
    cols = -torch.log_softmax(logits, dim=0).diagonal().mean()
    assert contrastive_loss(logits).item() == pytest.approx(((rows + cols) / 2).item(), rel=1e-5, abs=1e-5)
    assert contrastive_loss(100 * torch.eye(4)).item() < 1e-6
    with pytest.raises(ValueError, match=r"\(B, B \+ E\)"):
        contrastive_loss(torch.zeros(4, 3))


def test_contrastive_loss_extra_columns_are_negatives_for_texts_only():
    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(1)) * 4  # 3 videos + 2 extra negatives
    rows = -torch.log_softmax(logits, dim=1).diagonal().mean()
    cols = -torch.log_softmax(logits[:, :3], dim=0).diagonal().mean()
    assert contrastive_loss(logits).item() == pytest.approx(((rows + cols) / 2).item(), rel=1e-5, abs=1e-5)
    assert contrastive_loss(torch.zeros(3, 5)).item() == pytest.approx((math.log(5) + math.log(3)) / 2, rel=1e-5, abs=1e-5)


# ---- gather_features on a real 2-process gloo group ----

WORLD, LOCAL_B, WIDTH = 2, 3, 4


def _global_features():
    """The whole global batch, identical on every rank: (WORLD * LOCAL_B, WIDTH) texts and videos."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(WORLD * LOCAL_B, WIDTH, generator=gen), torch.randn(WORLD * LOCAL_B, WIDTH, generator=gen)


def _global_loss(text, video):
    return contrastive_loss(10 * F.normalize(text, dim=-1) @ F.normalize(video, dim=-1).T)


def _gather_worker(rank, store_path, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(store_path, WORLD), rank=rank, world_size=WORLD)
    try:
        text, video = _global_features()
        rows = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
        local_text = text[rows].clone().requires_grad_(True)
        local_video = video[rows].clone().requires_grad_(True)
        all_text, all_video = gather_features(local_text), gather_features(local_video)
        _global_loss(all_text, all_video).backward()
        mask = torch.arange(LOCAL_B) % 2 == rank
        torch.save(
            {
                "text": all_text.detach(),
                "video": all_video.detach(),
                "text_grad": local_text.grad,
                "video_grad": local_video.grad,
                "mask": gather_features(mask),
            },
            f"{out_dir}/rank{rank}.pt",
        )
        bad_shape = torch.zeros(LOCAL_B + rank, WIDTH)
        try:
            gather_features(bad_shape)
        except ValueError as err:
            torch.save(str(err), f"{out_dir}/error{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gather_features_two_process_gloo(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_gather_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    text, video = _global_features()
    text.requires_grad_(True)
    video.requires_grad_(True)
    _global_loss(text, video).backward()  # single process, whole batch: the gradient each rank must see
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        rows = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)
        assert got["text"].shape == (WORLD * LOCAL_B, WIDTH)
        # the gathered features are copies of what each rank sent: exact; the gradients are sums in another order
        torch.testing.assert_close(got["text"], text.detach(), rtol=0, atol=0)
        torch.testing.assert_close(got["video"], video.detach(), rtol=0, atol=0)
        torch.testing.assert_close(got["text_grad"], text.grad[rows], **FLOAT32)
        torch.testing.assert_close(got["video_grad"], video.grad[rows], **FLOAT32)
        assert got["mask"].dtype == torch.bool
        assert got["mask"].tolist() == [True, False, True, False, True, False]
        assert "same shape on every rank" in torch.load(tmp_path / f"error{rank}.pt")


def test_gather_features_is_identity_without_distributed():
    tensor = torch.randn(3, 2)
    assert gather_features(tensor) is tensor


# ---- text_to_frame_weights: s~_i of Eq. 13 for one text and one video ----


def _reference_frame_weights(tokens, frames, tau):
    """Eq. 11-13 as written: c_bar_i per frame, then a softmax over frames of tau c_bar_i . v_i."""
    s = [_softmax([tau * _dot(c, v) for c in tokens]) for v in frames]  # s[i][j], Eq. 11
    c_bar = [_weighted_sum(s[i], tokens) for i in range(len(frames))]  # Eq. 12
    return _softmax([tau * _dot(c_bar[i], v) for i, v in enumerate(frames)])  # Eq. 13


@pytest.mark.parametrize("tau", [100.0, 3.0])
def test_frame_weights_match_the_equations(tau):
    text, mask, video = _inputs(n_text=3, n_video=2, n_tokens=6, n_frames=7)
    for a in range(3):
        for b in range(2):
            weights = text_to_frame_weights(text[a], mask[a], video[b], tau=tau)
            tokens = [_unit(text[a, j].tolist()) for j in range(6) if mask[a, j]]
            frames = [_unit(video[b, i].tolist()) for i in range(7)]
            expected = torch.tensor(_reference_frame_weights(tokens, frames, tau), dtype=torch.float64)
            assert weights.shape == (7,) and weights.dtype == torch.float32
            torch.testing.assert_close(weights.double(), expected, atol=1e-5, rtol=1e-4)
            assert weights.sum().item() == pytest.approx(1.0, **FLOAT32_APPROX)


def test_frame_weights_pick_the_frame_the_text_matches():
    gen = torch.Generator().manual_seed(3)
    video = torch.randn(6, 16, generator=gen)
    text = torch.stack([video[4] + 0.01 * torch.randn(16, generator=gen), torch.full((16,), float("nan"))])
    weights = text_to_frame_weights(text, torch.tensor([True, False]), video)  # NaN padding never leaks
    assert int(weights.argmax()) == 4 and torch.isfinite(weights).all()


@pytest.mark.parametrize("shapes, message", [
    (((6, 16), (6,), (5, 8)), "feature width"),
    (((2, 6, 16), (6,), (5, 16)), "text_tokens \\(N, P\\)"),
    (((6, 16), (5,), (5, 16)), "text_mask must be"),
])
def test_frame_weights_bad_shapes_raise(shapes, message):
    text, mask, video = shapes
    with pytest.raises(ValueError, match=message):
        text_to_frame_weights(torch.randn(text), torch.ones(mask, dtype=torch.bool), torch.randn(video))
