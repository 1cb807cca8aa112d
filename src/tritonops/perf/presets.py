"""Payload presets for the protocol study (issue 15): tiny real models whose *requests* have the sizes
users care about, so the JSON-vs-binary gap shows where it matters.

Each preset is an ONNX model made in-process with ``onnx.helper`` and built into a repository through
tritonops' own build path (inspection, run check, staged atomic writes, ``config.pbtxt`` last), with
dynamic batching and ``max_batch_size`` 8. Responses are kept small (a reduce to a few values), so
what a protocol costs is the request:

- ``small``: FP32 [16] -> a 16x4 linear layer -> FP32 [4]
- ``image``: FP32 [3,224,224] (602 KB binary, several MB as JSON) -> per-channel mean FP32 [3]
- ``image-u8``: UINT8 image bytes [224,224,3] (150 KB) -> per-channel mean FP32 [3]
- ``text``: one BYTES/string element (a sentence or a short paragraph) -> its word count INT64 [1]
  (ONNX ``StringSplit``, which the CPU ``onnxruntime`` backend runs like any other op)
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tritonops.build import BuildOptions, build_many
from tritonops.errors import UsageError
from tritonops.perf.inputs import Samples
from tritonops.progress import Progress, reporter

MAX_BATCH_SIZE = 8
OPSET = 20  # StringSplit (text) is opset 20; ReduceMean then takes its axes as an input
IR_VERSION = 9
SAMPLES_SAVED = 4  # realistic samples saved beside each model (validate and perf use them)

# A plain vocabulary for the text preset's sentences: realistic lengths and word shapes, no corpus needed.
_VOCABULARY = (
    "the a an this that our your their model server request response batch tensor image text payload "
    "cache latency throughput client protocol binary json grpc http queue instance backend network "
    "quickly slowly always never often under over between before after while because although "
    "is are was were be has have had can could should would will may might must "
    "send sends sent read reads receive receives measure measures compare compares serve serves "
    "small large fast slow new old first last same different every each many few some most "
    "user users engineer data result results number numbers time times second seconds minute "
    "and or but so then when where which who what how why with without from into onto across"
)
_WORDS = tuple(_VOCABULARY.split())


@dataclass(frozen=True)
class Preset:
    """One payload preset: the model it builds, its one input and the size of a batch-1 request's tensor."""

    name: str
    model: str
    description: str
    input_name: str
    dtype: str  # Triton type name of the input
    shape: tuple[int, ...]  # one sample, without the batch dimension
    request_bytes: int  # tensor bytes of one batch-1 request as sent in binary (BYTES: an estimate)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("small", "preset_small", "FP32 [16] -> linear layer -> FP32 [4]", "x", "FP32", (16,), 16 * 4),
    Preset("image", "preset_image", "FP32 image [3,224,224] -> per-channel mean FP32 [3]", "image", "FP32",
           (3, 224, 224), 3 * 224 * 224 * 4),
    Preset("image-u8", "preset_image_u8", "UINT8 image bytes [224,224,3] -> per-channel mean FP32 [3]", "pixels",
           "UINT8", (224, 224, 3), 224 * 224 * 3),
    Preset("text", "preset_text", "a sentence or short paragraph (BYTES [1]) -> word count INT64 [1]", "text",
           "BYTES", (1,), 4 + 140),
)}


def preset(name: str) -> Preset:
    """The preset called ``name``; a UsageError listing the presets otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown payload preset '{name}'",
                         f"the presets are: {', '.join(PRESETS)}") from None


# ------------------------------------------------------------------------------------------- the models
def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def _small(p: Preset, path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", [p.input_name, "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        p.model, [helper.make_tensor_value_info(p.input_name, TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], initializer=[w, b])
    return _save(graph, path)


def _channel_mean(p: Preset, path: Path, elem: int, axes: tuple[int, int]) -> Path:
    """Mean over the spatial axes: a real reduction of the whole image, three values back."""
    nodes = []
    source = p.input_name
    if elem != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [source], ["as_float"], to=TensorProto.FLOAT))
        source = "as_float"
    nodes.append(helper.make_node("ReduceMean", [source, "axes"], ["mean"], keepdims=0))
    graph = helper.make_graph(
        nodes, p.model, [helper.make_tensor_value_info(p.input_name, elem, ["batch", *p.shape])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes")])
    return _save(graph, path)


def _text(p: Preset, path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("StringSplit", [p.input_name], ["words", "word_count"], delimiter=" ")],
        p.model, [helper.make_tensor_value_info(p.input_name, TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info("word_count", TensorProto.INT64, ["batch", 1])])
    return _save(graph, path)


_MAKERS: dict[str, Callable[[Preset, Path], Path]] = {
    "small": _small,
    "image": lambda p, path: _channel_mean(p, path, TensorProto.FLOAT, (2, 3)),
    "image-u8": lambda p, path: _channel_mean(p, path, TensorProto.UINT8, (1, 2)),
    "text": _text,
}


def make_preset_onnx(name: str, path: Path) -> Path:
    """Write the preset's ONNX model to ``path``."""
    return _MAKERS[preset(name).name](PRESETS[name], path)


# ------------------------------------------------------------------------------------------- samples
def _sentence(rng: np.random.Generator) -> bytes:
    """A sentence (8-20 words) or, one time in three, a short paragraph of two to four of them."""
    parts = []
    for _ in range(int(rng.integers(2, 5)) if rng.random() < 1 / 3 else 1):
        words = [str(w) for w in rng.choice(_WORDS, size=int(rng.integers(8, 21)))]
        parts.append(" ".join(words).capitalize() + ".")
    return " ".join(parts).encode()


def preset_array(p: Preset, rng: np.random.Generator) -> np.ndarray:
    """One sample of the preset's input with realistic values: random image pixels (FP32 in [0, 1],
    as decoded images are usually scaled), pixel bytes, sentences, standard-normal features."""
    if p.dtype == "BYTES":
        arr = np.empty(1, dtype=np.object_)
        arr[0] = _sentence(rng)
        return arr.reshape(p.shape)
    if p.dtype == "UINT8":
        return rng.integers(0, 256, size=p.shape, dtype=np.uint8)
    if p.name == "image":
        return (rng.integers(0, 256, size=p.shape, dtype=np.uint8).astype(np.float32) / 255.0).astype(np.float32)
    return rng.standard_normal(p.shape).astype(np.float32)


def preset_samples(name: str, count: int, seed: int = 0) -> Samples:
    """``count`` distinct batch-1 samples of the preset's input (the shape without the batch dim)."""
    p = preset(name)
    if count < 1:
        raise UsageError(f"sample count {count} is not positive", "ask for at least one sample")
    rng = np.random.default_rng(seed)
    return Samples(tuple({p.input_name: preset_array(p, rng)} for _ in range(count)), f"preset:{p.name}")


def _write_samples(p: Preset, work: Path) -> Path:
    """The preset's samples as a file ``build --samples`` reads (text: one sentence per line)."""
    samples = preset_samples(p.name, SAMPLES_SAVED, seed=0)
    if p.dtype == "BYTES":
        path = work / f"{p.model}.txt"
        path.write_bytes(b"\n".join(item[p.input_name].reshape(-1)[0] for item in samples.items) + b"\n")
        return path
    path = work / f"{p.model}.npz"
    np.savez(path, **{p.input_name: np.stack([item[p.input_name] for item in samples.items])})
    return path


# ------------------------------------------------------------------------------------------- building
def _already_there(repository: Path, p: Preset, source: Path) -> bool:
    """The preset's model is in the repository as this version of tritonops makes it."""
    model = repository / p.model
    built = model / "1" / "model.onnx"
    return (model / "config.pbtxt").is_file() and built.is_file() and built.read_bytes() == source.read_bytes()


def write_preset_repository(repository: Path, names: Sequence[str], progress: Progress | None = None
                            ) -> dict[str, str]:
    """Build the presets ``names`` into ``repository`` as version 1 (all or nothing, like
    ``tritonops build -f``); returns preset -> model name. Each model keeps realistic samples beside
    its config. A preset already built there is left as it is (writing twice changes nothing); a
    different model of the same name is refused by the build."""
    chosen = [preset(n) for n in dict.fromkeys(names)]
    if not chosen:
        raise UsageError("no payload preset given", f"the presets are: {', '.join(PRESETS)}")
    say = reporter(progress)
    with tempfile.TemporaryDirectory(prefix="tritonops-presets-") as scratch:
        work = Path(scratch)
        options = []
        for p in chosen:
            source = make_preset_onnx(p.name, work / f"{p.model}.onnx")
            if _already_there(repository, p, source):
                say(f"preset {p.name}: already in {repository}")
                continue
            say(f"preset {p.name}: {p.description}")
            options.append(BuildOptions(source=str(source), name=p.model, repository=repository, version=1,
                                        max_batch_size=MAX_BATCH_SIZE, samples=_write_samples(p, work)))
        if options:
            build_many(options, progress)
    return {p.name: p.model for p in chosen}
