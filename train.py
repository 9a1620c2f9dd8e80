"""Train GMF, MLP or NeuMF: ``python train.py fit --config configs/neumf.yaml`` (see README)."""
from ncf.cli import main

if __name__ == "__main__":
    main()
