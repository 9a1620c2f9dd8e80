"""ncf: GMF, MLP and NeuMF on implicit feedback with the NCF leave-one-out protocol."""
from .data import NCFDataModule, load_dataset
from .datasets import DataError, Interactions, load_interactions_file, load_ncf_presplit
from .models import GMF, MLP, NeuMF, build_model
from .module import NCFModule
from .movielens import load_movielens
from .checkpoint import load_network
from .errors import CheckpointError, ConfigError, UserError

__all__ = ["NCFDataModule", "NCFModule", "GMF", "MLP", "NeuMF", "build_model", "load_dataset", "load_movielens",
           "load_interactions_file", "load_ncf_presplit", "DataError", "Interactions", "CheckpointError", "ConfigError", "UserError",
           "load_network"]
