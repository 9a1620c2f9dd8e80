"""explain: captum attributions for ncf models, a Lightning callback that records them every epoch,
and the explain.py command line."""
from .core import DEFAULT_SETTINGS, LIME_PRESETS, METHODS, Attribution, attribute, attribute_many
from .faithfulness import faithfulness
from .callback import AttributionCallback

__all__ = ["METHODS", "DEFAULT_SETTINGS", "LIME_PRESETS", "Attribution", "attribute", "attribute_many",
           "faithfulness", "AttributionCallback"]
