"""pass_through: the graph's first output for the first row, unprocessed (ELASTIC_REFERENCE.md §2.9)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelError
from ..manifest import Manifest
from .common import (
    Prepared,
    TaskConfig,
    check_row_count,
    first_window,
    parse_common_update,
    with_truncation,
)

if TYPE_CHECKING:
    from ..tokenization import Tokenizer

NAME = "pass_through"


@dataclasses.dataclass(frozen=True)
class PassThroughConfig(TaskConfig):
    """PassThrough has only the common settings."""


class PassThrough:
    """The pass_through task (see the module docstring)."""

    name = NAME

    def parse_config(self, manifest: Manifest, config: Mapping[str, Any]) -> PassThroughConfig:
        results_field, truncate, span = parse_common_update(NAME, manifest, config)
        return PassThroughConfig(results_field=results_field, truncate=truncate, span=span)

    def prepare(self, text: str, cfg: TaskConfig, tokenizer: Tokenizer) -> Prepared:
        text, windows, is_truncated = first_window(text, cfg, tokenizer)
        return Prepared(text=text, windows=windows, is_truncated=is_truncated)

    def finish(
        self, prepared: Prepared, outputs: list[tuple[np.ndarray, ...]], cfg: TaskConfig
    ) -> dict[str, Any]:
        check_row_count(NAME, outputs, 1)
        if not outputs[0]:
            raise ModelError(f"[{NAME}] model returned no outputs")
        values = np.asarray(outputs[0][0], dtype=np.float64)
        if values.ndim == 1:
            # A pooled [hidden] output still reads as ES's 2-D R[0]: one row.
            values = values[None, :]
        if values.ndim != 2:
            raise ModelError(f"[{NAME}] expected a 2-D output per text; got shape {list(values.shape)}")
        return with_truncation({cfg.results_field: values.tolist()}, prepared.is_truncated)


TASK = PassThrough()
