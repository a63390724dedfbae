"""keras2torch: convert Keras models to readable PyTorch source and weights.

    import migrate
    conv = migrate.convert("model.keras")
    conv.save("out/")
    migrate.verify("model.keras", conv)   # parity against Keras (needs TF)
    migrate.convert_many(["a.keras", "models/"], "ports/", jobs=4)

The flow, one module each: read/ (files -> graph.py IR) -> layout.py ->
rules/ -> translate.py -> emit/ (model.py text) -> write.py / verify.py.
"""
__version__ = "0.1.0"

from .errors import ConversionError, UnsupportedLayers  # noqa: E402
from .api import Conversion, convert  # noqa: E402
from .verify import verify  # noqa: E402
from .batch import BatchResult, convert_many  # noqa: E402
from . import check, inspect  # noqa: E402,F401  (migrate.check.check, ...)

__all__ = ["BatchResult", "Conversion", "ConversionError",
           "UnsupportedLayers", "convert", "convert_many", "verify",
           "__version__"]
