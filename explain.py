"""Explain a trained model's predictions: ``python explain.py CKPT --user 196 --item 242`` (see README)."""
import sys

from explain.cli import main

if __name__ == "__main__":
    sys.exit(main())
