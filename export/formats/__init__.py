"""The artifact formats a device profile may name (export/profiles.yaml), one module each.

A new format is a module beside these that builds an `ArtifactFormat` (export/formats/spec.py), plus
its line in `FORMATS`; a format scored in a runtime edgetune does not run yet also needs that
runtime's runner in eval/runners.py (docs/architecture.md).
"""

from export.formats import gguf, onnx, safetensors
from export.formats.spec import ArtifactFormat

FORMATS: dict[str, ArtifactFormat] = {f.name: f for f in (gguf.FORMAT, onnx.FORMAT, safetensors.FORMAT)}
