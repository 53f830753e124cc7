"""lmms-eval's `--model stanchat`: the native plugin (install `stanchat[lmms]`).

lmms-eval finds it through the Python entry-point group `lmms_eval.models` (pyproject.toml), which
names `manifest` here; the model itself is `stanchat.lmms.model.StanchatLMM`. Importing this package
imports nothing: lmms-eval loads only when it asks for the manifest.
"""


def manifest():
    """The `ModelManifest` lmms-eval registers `stanchat` with: a "simple" model (doc_to_visual +
    doc_to_text), the kind lmms-eval 0.7 runs multiple-choice (likelihood) tasks with."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="stanchat", simple_class_path="stanchat.lmms.model.StanchatLMM")
