"""Exporters: turn a Hugging Face model into a model package (ONNX graph, tokenizer.json, engine.json).

``export(source, out, task=None, **options)`` is the entry point; ``engine export`` is its CLI. Importing
this package does not import torch or transformers: they load when an export runs.
"""

from __future__ import annotations

from .export import ExportOptions, export

__all__ = ["ExportOptions", "export"]
