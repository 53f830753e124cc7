"""The recipe's graft losses (training.losses) against direct computations on a tiny VideoCLIP."""

import torch

from stanchat.stan import STANConfig, fuse_frames, run_video_tower
from stanchat.videoclip import VideoCLIP
from tests.floats import FLOAT32
from tests.tiny import randomise, tiny_clip
from training.losses import still_gap


def test_still_gap_is_the_relative_distance_to_the_towers_image_tokens_and_trains_down():
    model = randomise(VideoCLIP.from_clip(tiny_clip(), STANConfig(depth=2, end_layer=-2, drop_path_rate=0.0)))
    model.freeze_clip()
    video = torch.randn(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        still = video[:, :1].expand_as(video)
        hidden, branch = run_video_tower(model.clip.vision_model, model.stan, still, model.end)
        image = model.clip.vision_model(video[:, 0], output_hidden_states=True).hidden_states[model.end + 1]
        fused = fuse_frames(hidden, branch, 4)  # (B, T, 1+L, D)
        expected = (fused - image[:, None]).square().mean() / image.square().mean()
        torch.testing.assert_close(still_gap(model, video), expected, **FLOAT32)
    optimizer = torch.optim.Adam(model.stan.parameters(), lr=1e-2)
    start = still_gap(model, video).item()
    for _ in range(20):
        optimizer.zero_grad()
        still_gap(model, video).backward()
        optimizer.step()
    assert still_gap(model, video).item() < 0.5 * start
    assert all(p.grad is None for p in model.clip.parameters())
