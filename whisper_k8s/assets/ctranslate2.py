"""A CTranslate2 (faster-whisper) Whisper model -> a Hugging Face ``WhisperForConditionalGeneration`` folder.

Many sites already hold Whisper weights as faster-whisper folders (``model.bin``, ``config.json``,
``vocabulary.txt``/``tokenizer.json``). The weights are the same tensors under other names, so the conversion
is a renaming plus two splits; ``model.bin`` is read directly, without the ctranslate2 package.

The file (binary version 6, the one current converters write; versions 2 to 6 share this reading) is, little
endian: ``u32`` version; ``string`` spec name and ``u32`` spec revision; ``u32`` number of variables, then per
variable its ``string`` name, ``u8`` rank, ``rank x u32`` dimensions, ``u8`` data type (0 float32, 1 int8,
2 int16, 3 int32, 4 float16, 5 bfloat16) and ``u32`` byte count, followed by the raw data; then ``u32``
number of aliases and ``(string alias, string target)`` pairs. A ``string`` is a ``u16`` length (counting a
final NUL) and the bytes. Version 3 and lower store an item size and an element count instead of the type
and byte count.

Layout facts of CTranslate2's ``WhisperSpec`` used here: each attention's query/key/value projections are
fused row-wise into ``linear_0`` (cross-attention: query ``linear_0``, key+value ``linear_1``, output
``linear_2``), with a zero bias standing in for the key projection, which has none in Whisper (a key bias
adds the same value to every score of a query, so the softmax ignores it: dropping it is exact); layer norms
are ``gamma``/``beta``; ``ffn/linear_0``/``linear_1`` are ``fc1``/``fc2``; ``decoder/projection`` is an alias
of the token embedding (the tied head). Scalars record the architecture (``num_heads``, ``activation`` 3 =
GELU, ``pre_norm``), and are checked to be Whisper's.
"""

from __future__ import annotations

import functools
import json
import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_k8s.atomic import atomic_directory
from whisper_k8s.checksum import sha256_file
from whisper_k8s.errors import UserError

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
GELU = 3  # CTranslate2's ActivationType
MARKER_FILE = "whisper_k8s_ctranslate2.json"
# Older names of the same tokens in vocabularies exported from early Hugging Face tokenizers: the ISO 639
# code Hebrew had before 1989, and the first release's name of <|nospeech|>.
TOKEN_ALIASES = {"<|iw|>": "<|he|>", "<|nocaptions|>": "<|nospeech|>"}


@dataclass
class Ct2Model:
    """The variables of one ``model.bin`` (numpy views of the mapped file) and its aliases."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]

    def scalar(self, name: str) -> int:
        return int(self.get(name).reshape(-1)[0])


class _Reader:
    def __init__(self, data, path: Path):
        self.data, self.offset, self.path = data, 0, path

    def values(self, fmt: str) -> tuple:
        try:
            found = struct.unpack_from("<" + fmt, self.data, self.offset)
        except struct.error:
            raise UserError(f"{self.path} ends early at byte {self.offset}: the file is truncated") from None
        self.offset += struct.calcsize("<" + fmt)
        return found

    def take(self, fmt: str) -> int:
        return self.values(fmt)[0]

    def string(self) -> str:
        length = self.take("H")
        raw = bytes(self.data[self.offset : self.offset + length])
        self.offset += length
        return raw.rstrip(b"\0").decode("utf-8")

    def array(self, dtype, shape: tuple[int, ...], nbytes: int) -> np.ndarray:
        if self.offset + nbytes > len(self.data):
            raise UserError(f"{self.path} ends early at byte {self.offset}: the file is truncated")
        if dtype == "bfloat16":  # numpy has none: keep the bits, widen to float32 later
            values = np.frombuffer(self.data, np.uint16, nbytes // 2, self.offset)
            values = (values.astype(np.uint32) << 16).view(np.float32)
        else:
            values = np.frombuffer(self.data, dtype, nbytes // np.dtype(dtype).itemsize, self.offset)
        self.offset += nbytes
        return values.reshape(shape)


def read_model_bin(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (memory-mapped; the arrays stay views of the file)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot be read as a CTranslate2 model.bin ({err})") from err
    reader = _Reader(data, path)
    version = reader.take("I")
    if not 1 <= version <= 6:
        raise UserError(f"{path}: binary version {version} is not a CTranslate2 model.bin this reader knows (1-6)")
    spec, revision = (reader.string(), reader.take("I")) if version >= 2 else ("", 1)
    variables = {}
    for _ in range(reader.take("I")):
        name = reader.string()
        shape = reader.values(f"{reader.take('B')}I")
        if version >= 4:
            type_id, nbytes = reader.take("B"), reader.take("I")
        else:
            item_size, count = reader.take("B"), reader.take("I")
            type_id, nbytes = {4: 0, 2: 4, 1: 1}[item_size], item_size * count
        if type_id not in DTYPES:
            raise UserError(f"{path}: variable {name} has data type {type_id}, which this reader does not know")
        variables[name] = reader.array(DTYPES[type_id], shape, nbytes)
    aliases = {}
    if version >= 3:
        for _ in range(reader.take("I")):
            alias = reader.string()
            aliases[alias] = reader.string()
    return Ct2Model(spec, revision, variables, aliases)


# --- CTranslate2 names -> Hugging Face names ----------------------------------------------------------------

_NORMS = {"self_attention/layer_norm": "self_attn_layer_norm", "attention/layer_norm": "encoder_attn_layer_norm",
          "ffn/layer_norm": "final_layer_norm"}
_LINEARS = {"self_attention/linear_1": "self_attn.out_proj", "attention/linear_0": "encoder_attn.q_proj",
            "attention/linear_2": "encoder_attn.out_proj", "ffn/linear_0": "fc1", "ffn/linear_1": "fc2"}
_FUSED = {"self_attention/linear_0": ("self_attn", ("q_proj", "k_proj", "v_proj")),
          "attention/linear_1": ("encoder_attn", ("k_proj", "v_proj"))}


def _layer_count(model: Ct2Model, stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    return 1 + max((int(m.group(1)) for n in model.variables if (m := pattern.match(n))), default=-1)


def hf_state(model: Ct2Model) -> dict[str, np.ndarray]:
    """HF Whisper tensor names -> arrays (the head is tied, so ``proj_out`` is not listed)."""
    state = {}
    for stack in ("encoder", "decoder"):
        prefix = f"model.{stack}"
        state[f"{prefix}.embed_positions.weight"] = model.get(f"{stack}/position_encodings/encodings")
        state[f"{prefix}.layer_norm.weight"] = model.get(f"{stack}/layer_norm/gamma")
        state[f"{prefix}.layer_norm.bias"] = model.get(f"{stack}/layer_norm/beta")
        for i in range(_layer_count(model, stack)):
            src, dst = f"{stack}/layer_{i}", f"{prefix}.layers.{i}"
            for name, hf in _NORMS.items():
                if f"{src}/{name}/gamma" in model.variables:
                    state[f"{dst}.{hf}.weight"] = model.get(f"{src}/{name}/gamma")
                    state[f"{dst}.{hf}.bias"] = model.get(f"{src}/{name}/beta")
            for name, hf in _LINEARS.items():
                if f"{src}/{name}/weight" in model.variables:
                    state[f"{dst}.{hf}.weight"] = model.get(f"{src}/{name}/weight")
                    state[f"{dst}.{hf}.bias"] = model.get(f"{src}/{name}/bias")
            for name, (module, parts) in _FUSED.items():
                if f"{src}/{name}/weight" in model.variables:
                    weights = np.split(model.get(f"{src}/{name}/weight"), len(parts))
                    biases = np.split(model.get(f"{src}/{name}/bias"), len(parts))
                    for part, weight, bias in zip(parts, weights, biases, strict=True):
                        state[f"{dst}.{module}.{part}.weight"] = weight
                        if part != "k_proj":  # Whisper's key projections have no bias (see the docstring)
                            state[f"{dst}.{module}.{part}.bias"] = bias
    for conv in ("conv1", "conv2"):
        for kind in ("weight", "bias"):
            state[f"model.encoder.{conv}.{kind}"] = model.get(f"encoder/{conv}/{kind}")
    state["model.decoder.embed_tokens.weight"] = model.get("decoder/embeddings/weight")
    return state


def _check_whisper(model: Ct2Model, path: Path) -> None:
    expected = {"decoder/activation": GELU, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
                "decoder/alibi": 0}
    wrong = {k: model.scalar(k) for k, v in expected.items() if k in model.variables and model.scalar(k) != v}
    if model.spec != "WhisperSpec" or wrong:
        raise UserError(f"{path}: not a CTranslate2 Whisper model (spec {model.spec!r}, unexpected {wrong})")
    if any(name.endswith("weight_scale") for name in model.variables):
        raise UserError(f"{path}: quantized (int8) weights; convert the model with ct2-transformers-converter "
                        "--quantization float16 (or float32) first")
    projection = "decoder/projection/weight"
    if model.aliases.get(projection, projection) != "decoder/embeddings/weight" and not np.array_equal(
            model.get(projection), model.get("decoder/embeddings/weight")):
        raise UserError(f"{path}: the output projection is not tied to the token embedding, unlike Whisper's")


def model_config(model: Ct2Model) -> dict:
    """The config fields (MindSpeed-MM model.json style) the tensors and scalars determine."""
    from whisper_k8s.assets.processor import special_ids
    from whisper_k8s.convert.hf_config import VARIANT_BY_VOCAB

    vocab, d_model = model.get("decoder/embeddings/weight").shape
    variant = VARIANT_BY_VOCAB.get(vocab)
    if variant is None:
        raise UserError(f"vocabulary of {vocab} tokens is none of Whisper's ({sorted(VARIANT_BY_VOCAB)})")
    ids = special_ids(variant)
    return {
        "d_model": int(d_model), "vocab_size": int(vocab),
        "num_mel_bins": int(model.get("encoder/conv1/weight").shape[1]),
        "encoder_layers": _layer_count(model, "encoder"), "decoder_layers": _layer_count(model, "decoder"),
        "encoder_attention_heads": model.scalar("encoder/num_heads"),
        "decoder_attention_heads": model.scalar("decoder/num_heads"),
        "encoder_ffn_dim": int(model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        "decoder_ffn_dim": int(model.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        "max_source_positions": int(model.get("encoder/position_encodings/encodings").shape[0]),
        "max_target_positions": int(model.get("decoder/position_encodings/encodings").shape[0]),
        "activation_function": "gelu", "scale_embedding": False, "dropout": 0.0, "attention_dropout": 0.0,
        "activation_dropout": 0.0, "num_hidden_layers": _layer_count(model, "encoder"),
        "is_encoder_decoder": True, "use_cache": True, "max_length": 448,
        **{k: ids[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")},
        "begin_suppress_tokens": [220, ids["eos_token_id"]],
    }


def processor_variant(config: dict) -> str:
    from whisper_k8s.assets.processor import get_variant
    from whisper_k8s.convert.hf_config import VARIANT_BY_VOCAB

    variant = VARIANT_BY_VOCAB[config["vocab_size"]]
    if get_variant(variant).num_mel_bins != config["num_mel_bins"]:
        raise UserError(f"{config['num_mel_bins']} mel bins with a vocabulary of {config['vocab_size']}: "
                        f"no Whisper release pairs them")
    return variant


def _check_vocabulary(source: Path, tokenizer) -> None:
    """The CTranslate2 folder's ``vocabulary.txt`` (one token per line, in id order) must equal ours."""
    listed = source / "vocabulary.txt"
    if not listed.is_file():
        return
    tokens = listed.read_text(encoding="utf-8").split("\n")
    tokens = tokens[:-1] if tokens and tokens[-1] == "" else tokens
    ours = tokenizer.convert_ids_to_tokens(list(range(len(tokens))))
    differ = [i for i, (a, b) in enumerate(zip(tokens, ours, strict=True)) if TOKEN_ALIASES.get(a, a) != b]
    if differ:
        i = differ[0]
        raise UserError(f"{listed}: token {i} is {tokens[i]!r} where Whisper's vocabulary has {ours[i]!r} "
                        f"({len(differ)} differ): not a Whisper vocabulary")


def _generation_fields(source: Path) -> dict:
    """What faster-whisper's ``config.json`` adds: the alignment heads and the suppressed tokens."""
    try:
        extra = json.loads((source / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    fields = {}
    if extra.get("alignment_heads"):
        fields["alignment_heads"] = extra["alignment_heads"]
    if extra.get("suppress_ids"):
        fields["suppress_tokens"] = extra["suppress_ids"]
    if extra.get("suppress_ids_begin"):
        fields["begin_suppress_tokens"] = extra["suppress_ids_begin"]
    return fields


def _tensor(array: np.ndarray):
    import torch

    return torch.from_numpy(np.array(array))  # a copy: the mapped file is read-only


def _source_paths(src: str | Path) -> tuple[Path, Path]:
    src = Path(src)
    model_bin = src / "model.bin" if src.is_dir() else src
    if not model_bin.is_file():
        raise UserError(f"{src}: no CTranslate2 model.bin here: give a faster-whisper model folder or its model.bin")
    return model_bin.parent, model_bin


def convert_ctranslate2(src: str | Path, out: str | Path, *, dtype: str | None = None, force: bool = False,
                        expected_sha256: str | None = None) -> Path:
    """Write a Hugging Face Whisper folder (config, generation config, safetensors, processor) to ``out``.

    Idempotent: a folder this function wrote from the same ``model.bin`` (by sha256) and dtype is left as it
    is; any other non-empty ``out`` is refused unless ``force``. ``expected_sha256``: refuse a ``model.bin``
    whose digest differs (a download that is not the one pinned). The folder appears atomically.
    """
    from whisper_k8s.assets.processor import fill_processor_folder
    from whisper_k8s.convert.hf_config import write_hf_configs
    from whisper_k8s.convert.outputs import dtype_name, parse_dtype
    from whisper_k8s.convert.safetensors_io import write_streaming

    folder, model_bin = _source_paths(src)
    digest = sha256_file(model_bin)
    if expected_sha256 and digest != expected_sha256:
        raise UserError(f"{model_bin}: sha256 {digest} is not the expected {expected_sha256}: a different or "
                        "damaged file; download it again")
    out = Path(out)
    provenance = {"model_bin_sha256": digest, "dtype": dtype or "source"}
    marker = out / MARKER_FILE
    if marker.is_file() and json.loads(marker.read_text()) == provenance:
        return out
    model = read_model_bin(model_bin)
    _check_whisper(model, model_bin)
    config = model_config(model)
    variant = processor_variant(config)
    cast = parse_dtype(dtype)
    arrays = hf_state(model)
    stored = cast or _tensor(arrays["model.decoder.embed_tokens.weight"][:0]).dtype
    with atomic_directory(out, overwrite=force or marker.is_file(), what="converted model") as staging:
        processor = fill_processor_folder(staging, variant)
        _check_vocabulary(folder, processor.tokenizer)
        with open(staging / "model.safetensors", "wb") as weights:
            write_streaming(weights, [(name, cast or _tensor(array[:0]).dtype, array.shape,
                                       functools.partial(_tensor, array)) for name, array in arrays.items()])
        write_hf_configs(staging, config, tie_word_embeddings=True, dtype=dtype_name(stored))
        generation = staging / "generation_config.json"
        fields = {**json.loads(generation.read_text()), **_generation_fields(folder)}
        generation.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
        (staging / MARKER_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return out
