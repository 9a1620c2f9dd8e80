"""Tune a config's hyperparameters with Optuna: ``python tune.py --config configs/neumf.yaml`` (see README)."""
import sys

from ncf.tuning import main

if __name__ == "__main__":
    sys.exit(main())
