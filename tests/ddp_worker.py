"""Run by ``torchrun`` in test_train.py: train a tiny model, then save this rank's weights."""
import sys
from pathlib import Path

from safetensors.torch import save_file

from fvae.config import apply_overrides
from fvae.presets import run_config
from fvae.training.trainer import Trainer

if __name__ == "__main__":
    out = Path(sys.argv[1])
    config = apply_overrides(run_config("fvae", "mnist"), sys.argv[2:])
    trainer = Trainer(config, out, progress=False)
    trainer.fit()
    save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()},
              out / f"rank{trainer.ctx.rank}.safetensors")
