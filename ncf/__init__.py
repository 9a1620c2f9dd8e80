"""ncf: GMF, MLP, NeuMF and MF on implicit feedback with the NCF leave-one-out protocol."""
from .data import NCFDataModule, load_dataset
from .datasets import DataError, Interactions, load_interactions_file
from .contract import Recommender, build_network
from .mf import MF
from .models import GMF, MLP, NeuMF
from .module import NCFModule
from .movielens import load_movielens
from .presplit import load_ncf_presplit
from .checkpoint import load_network
from .errors import CheckpointError, ConfigError, UserError

__all__ = ["NCFDataModule", "NCFModule", "GMF", "MLP", "NeuMF", "MF", "Recommender", "build_network", "load_dataset", "load_movielens",
           "load_interactions_file", "load_ncf_presplit", "DataError", "Interactions", "CheckpointError", "ConfigError", "UserError",
           "load_network"]
