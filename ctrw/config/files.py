"""Config files (YAML or JSON), their errors, and the hash that identifies a config."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ctrw.config.evaluation import EvalConfig
from ctrw.config.presets import PRESETS, published_attacks
from ctrw.config.resources import PLACEMENT_FIELDS
from ctrw.config.train import TrainConfig

__all__ = ["ConfigError", "config_hash", "format_validation_error", "load_config_file"]


def config_hash(config: BaseModel) -> str:
    """Stable sha256 of a config's canonical JSON (defaults included). Where the job runs
    (``resources``, ``distributed``: ``ctrw.config.resources``) and where the data lies on the host
    (``data.root``) are left out: they do not change what the job computes, and a checkpoint
    resumes on other hardware and on another host."""
    exclude: dict[str, Any] = {name: True for name in PLACEMENT_FIELDS & set(type(config).model_fields)}
    if "data" in type(config).model_fields:  # where a host keeps the data (each worker sets it) neither
        exclude["data"] = {"root": True}
    data = config.model_dump(mode="json", exclude=exclude)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_config_file(path: str | Path, model: type[BaseModel] = TrainConfig) -> BaseModel:
    """Read a YAML or JSON file and validate it. Raises ConfigError with field paths."""
    import yaml
    from pydantic import ValidationError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) if p.suffix in (".yaml", ".yml") else json.loads(p.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p}: not valid YAML/JSON: {e}") from e
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    preset = raw.pop("preset", None)
    try:
        if preset == "published" and model is EvalConfig:
            evaluation = EvalConfig.model_validate(raw)
            published_attacks(evaluation)
            return evaluation
        if preset in PRESETS and model is not TrainConfig:
            raise ConfigError(f"{p}: preset: '{preset}' applies to training configs")
        if preset in PRESETS:
            return PRESETS[preset](**raw)
        if preset not in (None, "paper"):
            raise ConfigError(f"{p}: preset: unknown preset '{preset}' (paper | {' | '.join(PRESETS)})")
        # Lenient types in files: YAML reads 1e-3 (no dot) as a string.
        return model.model_validate(raw, strict=False)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source=str(p))) from e


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field."""


def format_validation_error(e: Any, source: str = "config") -> str:
    lines = [f"{source}: invalid configuration"]
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)
