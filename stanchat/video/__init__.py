"""Video input: decode, sample and preprocess frames for the model (no model code here).

    clip = load_video("yoga.mp4", frames=16, size=224)      # SampledFrames: (T, H, W, 3) uint8 + timestamps
    pixels = Preprocessor()(clip)                            # (1, T, 3, 224, 224) float, CLIP-normalised
    pre = Preprocessor()
    clip = load_video("yoga.mp4", frames=16, fit=pre.fit)   # (T, 224, 224, 3): fitted in the decoder
    pixels = pre(clip)                                       # the same pixels, only normalised here

Importing this package loads neither numpy, PyAV, decord nor torch: the decoders load in the decode
worker (see `watchdog`), numpy when frames are sampled, torch when preprocessing first runs.
"""

from stanchat.video.backends import AUTO, BACKENDS, Backend, BackendError
from stanchat.video.fit import Fit
from stanchat.video.load import DEFAULT_FOLDER_FPS, DEFAULT_TIMEOUT, SampledFrames, VideoClip, check_source, load_video
from stanchat.video.preprocess import CLIP_MEAN, CLIP_STD, Preprocessor, preprocess
from stanchat.video.sample import STRATEGIES

__all__ = [
    "AUTO",
    "BACKENDS",
    "DEFAULT_FOLDER_FPS",
    "DEFAULT_TIMEOUT",
    "STRATEGIES",
    "Backend",
    "BackendError",
    "CLIP_MEAN",
    "CLIP_STD",
    "Fit",
    "Preprocessor",
    "SampledFrames",
    "VideoClip",
    "check_source",
    "load_video",
    "preprocess",
]
