"""``python -m soraprep.train --config train.yaml`` (and ``torchrun --nproc_per_node N -m soraprep.train ...``).

Extra ``key=value`` arguments override config keys (YAML syntax), e.g. ``steps=200 lr=3e-4``.
Exit codes: 0 done, 2 config error.
"""

from __future__ import annotations

import argparse
import sys

import yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soraprep.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="training YAML; keys = soraprep.train.TrainConfig fields")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config keys")
    args = parser.parse_args(argv)
    from soraprep.train.config import ConfigError, load_train_config

    try:
        overrides = {}
        for item in args.overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key=value (e.g. steps=200)")
            k, v = item.split("=", 1)
            try:
                overrides[k] = yaml.safe_load(v)
            except yaml.YAMLError as exc:
                raise ConfigError(f"override {k}: {v!r} is not a YAML value ({type(exc).__name__}); "
                                  f"quote text, e.g. {k}='[...]'") from exc
        config = load_train_config(args.config, **overrides)
        try:
            from soraprep.train.loop import train
        except ImportError as exc:
            if (exc.name or "").split(".")[0] != "torch":
                raise
            raise ConfigError(f"training needs PyTorch, which cannot be imported here ({exc}): pip install torch") from exc

        result = train(config)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.checkpoint is not None:
        import os

        if int(os.environ.get("RANK", 0)) == 0:
            print(f"trained to step {result.step}; checkpoint {result.checkpoint}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
