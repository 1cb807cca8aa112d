"""Small real PyTorch modules for the conversion tests (imported only by torch-marked tests).

Each ``CASES`` entry: (module factory, input specs, expected output names when exported with
default names). Seeds are fixed so every run exports the same weights."""

from __future__ import annotations

import torch
from torch import nn

from tritonops.spec import TensorSpec


class SmallCNN(nn.Module):
    """image [3, 16, 16] -> conv/bn/relu/pool -> logits [5]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.head(h.mean(dim=(2, 3)))


class TwoInputs(nn.Module):
    """a [4], b [4] -> a * w + b (one output)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * self.w + b


class TupleOut(nn.Module):
    """x [6] -> (linear [3], sigmoid of the sum [1])."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.fc(x)
        return y, torch.sigmoid(y.sum(dim=1, keepdim=True))


class DictOut(nn.Module):
    """x [4] -> {"scores": softmax [2], "embedding": [3]}."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 2)
        self.b = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"scores": torch.softmax(self.a(x), dim=-1), "embedding": self.b(x)}


class TokenEmbed(nn.Module):
    """ids INT64 [-1] in [0, 999] -> mean embedding [8]. Ids outside the vocabulary would crash, so
    the input spec's value_range is what makes example data valid."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(1000, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids).mean(dim=1)


class Rank1Out(nn.Module):
    """x [4] -> one score per batch item: output shape [batch]."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).squeeze(-1)


def _make(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    m = cls()
    if isinstance(m, SmallCNN):  # non-trivial running stats, so eval-mode batch norm matters
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


def spec(text: str, value_range: tuple[float, float] | None = None) -> TensorSpec:
    s = TensorSpec.parse(text)
    return s if value_range is None else TensorSpec(s.name, s.dtype, s.dims, value_range=value_range)


CASES = {
    "cnn": (lambda: _make(SmallCNN), [spec("image:FP32:3,16,16")], ["output__0"]),
    "two_inputs": (lambda: _make(TwoInputs), [spec("a:FP32:4"), spec("b:FP32:4")], ["output__0"]),
    "tuple_out": (lambda: _make(TupleOut), [spec("x:FP32:6")], ["output__0", "output__1"]),
    "dict_out": (lambda: _make(DictOut), [spec("x:FP32:4")], ["scores", "embedding"]),
    "token_embed": (lambda: _make(TokenEmbed), [spec("ids:INT64:-1", (0, 999))], ["output__0"]),
    "rank1_out": (lambda: _make(Rank1Out), [spec("x:FP32:4")], ["output__0"]),
}


@torch.library.custom_op("tritonops_test::mystery", mutates_args=(), schema="(Tensor x) -> Tensor")
def mystery(x):
    return x * 3


@mystery.register_fake
def _(x):
    return torch.empty_like(x)


class CustomOp(nn.Module):
    """Uses a custom operator that no ONNX exporter knows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mystery(x) + 1
