"""explain: captum attributions for ncf models, a Lightning callback that records them every epoch,
history influence, and the explain.py command line."""
from . import methods
from .core import Attribution, Target, attribute
from .faithfulness import faithfulness
from .callback import AttributionCallback

__all__ = ["methods", "Attribution", "Target", "attribute", "faithfulness", "AttributionCallback"]
