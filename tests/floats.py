"""How closely two float32 results of the same math must agree when they are computed differently.

float32 carries about 7 significant digits. The same sum taken in another order (chunks, another
CPU's SIMD width, another torch version's kernels) moves a result by a few units in its last
place, relative to the size of what was summed. So a comparison needs a relative part (`rtol`)
plus an absolute floor (`atol`) for values near zero: `rtol=0` with a tight `atol` breaks as soon
as a value is larger than about 1 (a Mug gradient of 0.77 differed by 2.4e-6 on an AMD EPYC with
torch 2.14 and not on the Intel Xeon with torch 2.15 it was written on).

`FLOAT32` is for one computation against another that does the same math in another order.
`FLOAT32_DEEP` is for whole towers compared across implementations (open_clip against HF CLIP,
a hand-written reference against the model): several layers of matmuls, layer norms and
softmaxes, where the differences compound.

`FLOAT32_APPROX` is `FLOAT32` in `pytest.approx`'s keywords. Give `pytest.approx` both parts or
neither: with `abs` alone it drops its relative tolerance altogether.

Bit-exact comparisons (`torch.equal`, `rtol=0, atol=0`) stay only where both sides run the very
same kernels on the very same inputs in the same order: a copy, a save/load round trip, the same
modules called the same way, or a rerun with the same seed on one machine. Each one says why.
"""

FLOAT32 = {"rtol": 1e-5, "atol": 1e-5}
FLOAT32_DEEP = {"rtol": 1e-4, "atol": 1e-5}
FLOAT32_APPROX = {"rel": FLOAT32["rtol"], "abs": FLOAT32["atol"]}

# Seconds (timestamps, durations) come from a container's integer timestamps, exact to its time base
# (a millisecond in Matroska/WebM) however long the video, and the real clips' ground truth is
# written to the millisecond: an error that does not grow with the time, so the one absolute bound.
MILLISECOND = {"abs": 1e-3}
