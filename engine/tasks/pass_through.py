"""pass_through: the graph's first output for the first row, unprocessed (ELASTIC_REFERENCE.md §2.9)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ModelError
from ..tokenization import Window
from .common import (
    Prepared,
    TaskConfig,
    TaskRunner,
    first_window,
    parse_common_update,
    with_truncation,
)
from .outputs import Rows

NAME = "pass_through"


@dataclasses.dataclass(frozen=True)
class PassThroughConfig(TaskConfig):
    """PassThrough has only the common settings."""


class PassThrough(TaskRunner[PassThroughConfig, Prepared, Rows]):
    """The pass_through task (see the module docstring)."""

    name = NAME

    def parse_config(self, config: Mapping[str, Any] | None) -> PassThroughConfig:
        results_field, truncate, span = parse_common_update(NAME, self.manifest, config)
        return PassThroughConfig(results_field=results_field, truncate=truncate, span=span)

    def prepare(self, text: str, cfg: PassThroughConfig) -> Prepared:
        return first_window(self.tokenizer, text, cfg)

    def read(self, row: tuple[np.ndarray, ...], window: Window, cfg: PassThroughConfig) -> Rows:
        if not row:
            raise ModelError(f"[{NAME}] model returned no outputs")
        values = np.asarray(row[0], dtype=np.float64)
        if values.ndim == 1:
            # A pooled [hidden] output still reads as ES's 2-D R[0]: one row.
            values = values[None, :]
        if values.ndim != 2:
            raise ModelError(f"[{NAME}] expected a 2-D output per text; got shape {list(values.shape)}")
        return Rows(values)

    def result(self, prepared: Prepared, outputs: list[Rows], cfg: PassThroughConfig) -> dict[str, Any]:
        return with_truncation({cfg.results_field: outputs[0].values.tolist()}, prepared.is_truncated)


TASK = PassThrough
