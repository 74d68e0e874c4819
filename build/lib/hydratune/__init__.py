"""hydratune: a Hydra-composed launcher for fine-tuning language models.

Heavy libraries (torch, lightning, transformers) are imported by the modules that need them, so
`python train.py --help` and config checks stay fast.
"""

__version__ = "0.1.0"
