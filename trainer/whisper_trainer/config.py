"""The trainer's settings: MindSpeed-MM's ``model.json`` and ``data.json`` unchanged, plus Megatron-style flags.

A run is described by exactly what the seed's ``pretrain_whisper.sh`` gives MindSpeed-MM, so a user's existing
files and flags carry over. Everything is checked before any process group, model or file is created: an
unknown key, a wrong type or a contradiction (global batch not divisible, mel bins that differ from the
processor, ``--seq-length`` that differs from the model) raises a ``UserError`` naming the field and the fix.

Each flag is one field of a section dataclass below, declared with :func:`whisper_trainer.flags.option`
(torchtitan's style): its type, default, choices, range and help live there, and :func:`build_parser` and
:func:`parse_args` are generated from the fields. Adding a setting is one line in a section; the trainer then
reads ``cfg.<section>.<field>``.
"""

from __future__ import annotations

import argparse
import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from whisper_k8s.errors import UserError
from whisper_trainer import flags
from whisper_trainer.flags import Flag, option

COMPILE_CHOICES = ("auto", "on", "off")
ATTENTION_CHOICES = ("auto", "flash", "cudnn", "efficient", "math", "npu")
PRECISION_CHOICES = ("auto", "bf16", "bf16-autocast", "fp32")

# Every key of MindSpeed-MM's whisper model.json (tests/fixtures/reference/mindspeed-mm/model.json) ...
MODEL_JSON_KEYS = frozenset({
    "model_id", "ckpt_path", "activation_dropout", "activation_function", "apply_spec_augment", "architectures",
    "attention_dropout", "begin_suppress_tokens", "bos_token_id", "classifier_proj_size", "d_model",
    "decoder_attention_heads", "decoder_ffn_dim", "decoder_layerdrop", "decoder_layers", "decoder_start_token_id",
    "dropout", "encoder_attention_heads", "encoder_ffn_dim", "encoder_layerdrop", "encoder_layers", "eos_token_id",
    "init_std", "is_encoder_decoder", "mask_feature_length", "mask_feature_min_masks", "mask_feature_prob",
    "mask_time_length", "mask_time_min_masks", "mask_time_prob", "max_length", "max_source_positions",
    "max_target_positions", "median_filter_width", "model_type", "num_hidden_layers", "num_mel_bins",
    "pad_token_id", "scale_embedding", "torch_dtype", "use_cache", "use_weighted_layer_sum", "vocab_size",
})
# ... plus the Hugging Face config.json fields a user may have copied in from a downloaded model.
HF_CONFIG_EXTRA_KEYS = frozenset({
    "suppress_tokens", "tie_word_embeddings", "transformers_version", "_name_or_path", "dtype",
    "forced_decoder_ids", "output_hidden_states", "return_dict", "id2label", "label2id", "problem_type",
    "generation_config", "alignment_heads", "lang_to_id", "task_to_id", "no_timestamps_token_id",
})
REQUIRED_MODEL_KEYS = ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                       "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "num_mel_bins",
                       "vocab_size", "max_source_positions", "max_target_positions")
# MindSpeed-MM writes "bf16"; Hugging Face writes "bfloat16". Both mean the same.
DTYPE_NAMES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
               "fp32": "float32", "float32": "float32"}
# Keys a model.json holds that are not Hugging Face WhisperConfig arguments.
MM_ONLY_MODEL_KEYS = ("model_id", "ckpt_path", "torch_dtype", "num_hidden_layers")


@dataclass
class ModelConfig:
    """A MindSpeed-MM model.json, kept verbatim in ``fields`` (so it can be written back unchanged)."""

    fields: dict[str, Any]
    path: str = ""

    @property
    def ckpt_path(self) -> str:
        return str(self.fields.get("ckpt_path") or "")

    @property
    def num_mel_bins(self) -> int:
        return int(self.fields["num_mel_bins"])

    @property
    def n_frames(self) -> int:
        """The encoder's input length in mel frames: 2 x max_source_positions (conv2 has stride 2)."""
        return 2 * int(self.fields["max_source_positions"])

    @property
    def dtype(self) -> str:
        return DTYPE_NAMES[self.fields.get("torch_dtype", "float32")]

    def hf_kwargs(self) -> dict[str, Any]:
        """Arguments for ``transformers.WhisperConfig``: the MM-only keys dropped, the LM head untied.

        ``num_hidden_layers`` is dropped too: it is checked equal to ``encoder_layers``, and Hugging Face treats
        it as an alias that would override ``encoder_layers``.
        """
        kwargs = {k: v for k, v in self.fields.items() if k not in MM_ONLY_MODEL_KEYS}
        kwargs["tie_word_embeddings"] = False  # MindSpeed-MM trains and saves a separate proj_out.weight
        return kwargs


@dataclass
class DataConfig:
    """The parts of a MindSpeed-MM data.json the trainer uses (the whole document is validated)."""

    dataset_root: str
    languages: list[str]
    processor_dir: str
    task: str = "transcribe"
    shuffle: bool = True
    pin_memory: bool = False
    path: str = ""


@dataclass
class TrainingConfig:
    """Optimization, precision and data loading."""

    micro_batch_size: int = option(8, "samples per process per micro step", minimum=1)
    global_batch_size: int | None = option(None, "samples per optimizer step (default: micro batch x world "
                                                 "size, no accumulation)", minimum=1)
    train_iters: int = option(300, "optimizer steps", minimum=1)
    lr: float = option(1e-5, "peak learning rate", exclusive_minimum=0)
    min_lr: float = option(0.0, "learning rate at the end of the decay", minimum=0)
    lr_warmup_iters: int = option(0, "linear warm-up iterations from 0", minimum=0)
    lr_decay_iters: int | None = option(None, "iterations of the decay (default: --train-iters)", minimum=1)
    lr_decay_style: str = option("linear", "learning-rate decay after the warm-up",
                                 choices=("cosine", "linear", "constant"))
    weight_decay: float = option(0.0, "AdamW weight decay", minimum=0)
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.999, "AdamW beta2")
    adam_eps: float = option(1e-8, "AdamW epsilon")
    clip_grad: float = option(1.0, "gradient-norm clipping; 0 disables it (the norm is still logged)", minimum=0)
    bf16: bool = option(False, "Megatron's flag: the same as --precision bf16 (also on CPU)")
    precision: str = option("auto", "bf16: bf16 parameters and activations, fp32 master weights and gradient "
                                    "reduction; bf16-autocast: autocast over fp32 parameters (the earlier "
                                    "arrangement); fp32; auto: bf16 on GPU/NPU, fp32 on CPU",
                            choices=PRECISION_CHOICES)
    seed: int = option(1234, "random seed (model initialisation, data order)", minimum=0)
    num_workers: int = option(4, "data-loader worker processes per training process", minimum=0, maximum=64)
    split: str = option("train", "Common Voice split to train on")
    exit_interval: int | None = option(None, "save and exit after this iteration (Megatron)", minimum=1)
    max_label_tokens: int = 448  # not a flag: model.json max_target_positions


@dataclass
class ParallelConfig:
    """Devices, data parallelism and kernels."""

    strategy: str | None = option(None, "data parallelism: ddp, or fsdp (sharded); default: fsdp with "
                                        "--use-distributed-optimizer, else ddp", flag="--parallel",
                                  choices=("ddp", "fsdp"))
    device: str = option("auto", "device type (auto: npu, else cuda, else cpu)",
                         choices=("auto", "npu", "cuda", "cpu"))
    timeout_minutes: int = option(30, "timeout of the collectives in minutes",
                                  flag="--distributed-timeout-minutes", minimum=1)
    compile: str = option("auto", "torch.compile each encoder/decoder layer and the loss (auto: on CUDA only)",
                          choices=COMPILE_CHOICES)
    attention_backend: str = option("auto", "attention kernel: one SDPA backend, or npu (torch_npu's fused "
                                            "attention); auto: npu on Ascend, else PyTorch's SDPA choice",
                                    choices=ATTENTION_CHOICES)
    activation_checkpointing: bool = option(False, "recompute each encoder/decoder layer's activations in the "
                                                   "backward pass (less memory, more compute)")


@dataclass
class CheckpointConfig:
    """Checkpoints, in Megatron's layout."""

    save: str = option("", "checkpoint folder (Megatron layout)", required=True)
    load: str = option("", "checkpoint folder to resume from (default: --save)")
    save_interval: int = option(10000, "save every N iterations (and at the end, and on SIGTERM)", minimum=1)
    keep: int = option(3, "checkpoints kept on disk", flag="--keep-checkpoints", minimum=1)
    no_load_optim: bool = option(False, "resume the weights but not the optimizer state")
    no_load_rng: bool = option(False, "resume without the saved random-number-generator states")


@dataclass
class MetricsConfig:
    """Metrics and logs."""

    log_interval: int = option(1, "log every N iterations", minimum=1)
    metrics_file: str = option("", "JSON-lines metrics (default: metrics.jsonl beside the --save folder)")
    tensorboard_dir: str = option("", "TensorBoard event folder (default: none)")


@dataclass
class MegatronConfig:
    """MindSpeed-MM's two documents, and the other flags of the seed's pretrain_whisper.sh (checked against
    model.json or mapped onto the other settings)."""

    mm_model: str = option("", "MindSpeed-MM model.json", required=True)
    mm_data: str = option("", "MindSpeed-MM data.json", required=True)
    seq_length: int | None = option(None, "must equal model.json max_target_positions")
    max_position_embeddings: int | None = option(None, "must equal model.json max_source_positions")
    tensor_model_parallel_size: int = option(1, "only 1 (Whisper trains data-parallel)")
    pipeline_model_parallel_size: int = option(1, "only 1 (Whisper trains data-parallel)")
    context_parallel_size: int = option(1, "only 1 (Whisper trains data-parallel)")
    use_distributed_optimizer: bool = option(False, "sharded optimizer state: --parallel fsdp")
    overlap_grad_reduce: bool = option(False, "accepted; DDP and FSDP2 always overlap")
    overlap_param_gather: bool = option(False, "accepted; FSDP2 always prefetches")


@dataclass
class TrainerConfig:
    model: ModelConfig
    data: DataConfig
    training: TrainingConfig = field(default_factory=TrainingConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    megatron: MegatronConfig = field(default_factory=MegatronConfig)

    def accumulation_steps(self, world_size: int) -> int:
        """Micro steps per iteration so that micro batch x world size x steps = global batch."""
        per_step = self.training.micro_batch_size * world_size
        global_batch = self.training.global_batch_size or per_step
        if global_batch % per_step:
            raise UserError(
                f"--global-batch-size {global_batch} is not divisible by --micro-batch-size "
                f"{self.training.micro_batch_size} x world size {world_size} = {per_step}: "
                f"use a multiple of {per_step}"
            )
        return global_batch // per_step

    def global_batch_size(self, world_size: int) -> int:
        return self.training.micro_batch_size * world_size * self.accumulation_steps(world_size)

    def as_namespace(self, world_size: int) -> argparse.Namespace:
        """Megatron-style ``args`` for the checkpoint, so upstream tools find the fields they read."""
        t, c = self.training, self.checkpoint
        flat: dict[str, Any] = {}
        for section in (t, self.parallel, c, self.metrics):
            flat.update(asdict(section))
        flat.update(
            global_batch_size=self.global_batch_size(world_size), world_size=world_size,
            data_parallel_size=world_size, tensor_model_parallel_size=1, pipeline_model_parallel_size=1,
            context_parallel_size=1, seq_length=self.model.fields["max_target_positions"],
            max_position_embeddings=self.model.fields["max_source_positions"],
            lr_decay_iters=t.lr_decay_iters or t.train_iters, fp16=False,
            params_dtype=self.model.dtype, mm_model=self.model.path, mm_data=self.data.path,
            iteration=0, consumed_train_samples=0,
        )
        return argparse.Namespace(**flat)


def _fail(where: str, message: str) -> UserError:
    return UserError(f"{where}: {message}")


def _read_json(path: str, flag: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{flag} {path}: no such file")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{flag} {path}: not valid JSON ({err})") from err
    if not isinstance(doc, dict):
        raise UserError(f"{flag} {path}: expected a JSON object at the top")
    return doc


def validate_model_fields(fields: dict, where: str = "model.json") -> ModelConfig:
    """Check a model.json document; return it as a ModelConfig. Errors name the key."""
    unknown = sorted(set(fields) - MODEL_JSON_KEYS - HF_CONFIG_EXTRA_KEYS)
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(unknown)}: remove them (MindSpeed-MM's whisper "
                           "model.json fields and Hugging Face WhisperConfig fields are accepted)")
    for key in REQUIRED_MODEL_KEYS:
        if key not in fields:
            raise _fail(where, f"missing required key {key!r}")
        value = fields[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _fail(where, f"{key} must be a positive integer, found {value!r}")
    if fields.get("model_id", "whisper") != "whisper":
        raise _fail(where, f"model_id must be 'whisper', found {fields['model_id']!r}")
    if fields.get("model_type", "whisper") != "whisper":
        raise _fail(where, f"model_type must be 'whisper', found {fields['model_type']!r}")
    if fields.get("torch_dtype", "float32") not in DTYPE_NAMES:
        raise _fail(where, f"torch_dtype {fields['torch_dtype']!r} is not one of {', '.join(DTYPE_NAMES)}")
    if fields.get("tie_word_embeddings"):
        raise _fail(where, "tie_word_embeddings must be false: MindSpeed-MM trains a separate LM head "
                           "(proj_out.weight)")
    for heads in ("encoder_attention_heads", "decoder_attention_heads"):
        if fields["d_model"] % fields[heads]:
            raise _fail(where, f"d_model {fields['d_model']} is not divisible by {heads} {fields[heads]}")
    if "num_hidden_layers" in fields and fields["num_hidden_layers"] != fields["encoder_layers"]:
        # Hugging Face reads num_hidden_layers as an alias of encoder_layers: a different value would win.
        raise _fail(where, f"num_hidden_layers {fields['num_hidden_layers']} contradicts encoder_layers "
                           f"{fields['encoder_layers']}: make them equal or drop num_hidden_layers")
    ckpt = fields.get("ckpt_path", "")
    if ckpt is not None and not isinstance(ckpt, str):
        raise _fail(where, f"ckpt_path must be a string path, found {ckpt!r}")
    return ModelConfig(fields=dict(fields), path=where)


def load_model_json(path: str) -> ModelConfig:
    config = validate_model_fields(_read_json(path, "--mm-model"), where=f"--mm-model {path}")
    config.path = path
    return config


_DATA_SCHEMA: dict[str, Any] = {
    "dataset_param": {
        "dataset_type": str,
        "basic_parameters": {"dataset_name_or_path": str, "language": str},
        "preprocess_parameters": {"processor_name_or_path": str, "language": str, "task": str},
    },
    "dataloader_param": {
        "dataloader_mode": str, "shuffle": bool, "drop_last": bool, "pin_memory": bool,
        "collate_param": {"model_name": str, "processor_name_or_path": str, "language": str, "task": str},
    },
}


def _check_shape(doc: dict, schema: dict, where: str, trail: str = "") -> None:
    """Every key known and of the right type; the error names the dotted path of the field."""
    for key, value in doc.items():
        name = f"{trail}{key}"
        if key not in schema:
            raise _fail(where, f"unknown key {name!r} (known here: {', '.join(schema)})")
        expected = schema[key]
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise _fail(where, f"{name} must be an object")
            _check_shape(value, expected, where, f"{name}.")
        elif not isinstance(value, expected):
            raise _fail(where, f"{name} must be a {expected.__name__}, found {value!r}")


def _get(doc: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        doc = doc.get(part, {}) if isinstance(doc, dict) else {}
    return doc if doc != {} else None


def validate_data_fields(doc: dict, where: str = "data.json") -> DataConfig:
    _check_shape(doc, _DATA_SCHEMA, where)
    dataset_type = _get(doc, "dataset_param.dataset_type")
    if dataset_type not in (None, "audio"):
        raise _fail(where, f"dataset_param.dataset_type must be 'audio', found {dataset_type!r}")
    root = _get(doc, "dataset_param.basic_parameters.dataset_name_or_path")
    if not root:
        raise _fail(where, "dataset_param.basic_parameters.dataset_name_or_path is required "
                           "(the Common Voice 11 root folder)")
    language = _get(doc, "dataset_param.basic_parameters.language")
    languages = [part.strip() for part in (language or "").split(",") if part.strip()]
    if not languages:
        raise _fail(where, "dataset_param.basic_parameters.language is required (a Common Voice locale such "
                           "as 'hi', or a comma list)")
    processors = {k: _get(doc, k) for k in ("dataset_param.preprocess_parameters.processor_name_or_path",
                                            "dataloader_param.collate_param.processor_name_or_path")}
    given = {k: v for k, v in processors.items() if v}
    if not given:
        raise _fail(where, "dataset_param.preprocess_parameters.processor_name_or_path is required")
    if len(set(given.values())) > 1:
        raise _fail(where, "processor_name_or_path differs between " + " and ".join(
            f"{k} ({v!r})" for k, v in given.items()) + ": use the same processor for both")
    tasks = {k: _get(doc, k) for k in ("dataset_param.preprocess_parameters.task",
                                       "dataloader_param.collate_param.task")}
    given_tasks = {k: v for k, v in tasks.items() if v}
    for key, task in given_tasks.items():
        if task not in ("transcribe", "translate"):
            raise _fail(where, f"{key} must be 'transcribe' or 'translate', found {task!r}")
    if len(set(given_tasks.values())) > 1:
        raise _fail(where, "task differs between preprocess_parameters and collate_param")
    shuffle = _get(doc, "dataloader_param.shuffle")
    pin_memory = _get(doc, "dataloader_param.pin_memory")
    return DataConfig(
        dataset_root=root, languages=languages, processor_dir=next(iter(given.values())),
        task=next(iter(given_tasks.values()), "transcribe"), shuffle=True if shuffle is None else shuffle,
        pin_memory=bool(pin_memory), path=where,
    )


def load_data_json(path: str) -> DataConfig:
    config = validate_data_fields(_read_json(path, "--mm-data"), where=f"--mm-data {path}")
    config.path = path
    return config


def processor_feature_size(processor_dir: str) -> int:
    """Mel bins of a local processor folder, read the way transformers reads it (any of its file layouts)."""
    if not Path(processor_dir).is_dir():
        raise UserError(f"processor_name_or_path {processor_dir}: not a local Hugging Face WhisperProcessor "
                        "folder (nothing is downloaded; write one with `whisper-k8s assets processor`)")
    from transformers import WhisperFeatureExtractor

    try:
        return int(WhisperFeatureExtractor.from_pretrained(processor_dir, local_files_only=True).feature_size)
    except (OSError, ValueError) as err:
        raise UserError(f"processor_name_or_path {processor_dir}: no feature extractor settings ({err})") from err


def check_processor(model: ModelConfig, data: DataConfig) -> None:
    """The processor's mel bins must be the model's ``num_mel_bins`` (80 for v1/v2, 128 for v3)."""
    feature_size = processor_feature_size(data.processor_dir)
    if feature_size != model.num_mel_bins:
        raise UserError(
            f"model.json num_mel_bins {model.num_mel_bins} != processor feature_size {feature_size} "
            f"({data.processor_dir}): use a processor of the same Whisper generation as the model"
        )


def _sections() -> dict[str, type]:
    """The TrainerConfig sections whose fields are flags, in --help order."""
    hints = typing.get_type_hints(TrainerConfig)
    return {name: hints[name] for name in ("megatron", "training", "parallel", "checkpoint", "metrics")}


def trainer_flags() -> list[Flag]:
    """Every flag of the trainer, generated from the section dataclasses."""
    return flags.flags_of(_sections())


def build_parser() -> argparse.ArgumentParser:
    return flags.build_parser(
        _sections(), prog="whisper_trainer",
        description="Pretrain Whisper with MindSpeed-MM's model.json/data.json and Megatron-style flags "
                    "(launch with torchrun; runs as one process without it).")


def _check_flags(cfg: TrainerConfig) -> str:
    """Cross-checks between flags and with model.json; return the parallel strategy."""
    t, m, model = cfg.training, cfg.megatron, cfg.model
    if t.min_lr > t.lr:
        raise UserError(f"--min-lr {t.min_lr} is above --lr {t.lr}")
    decay = t.lr_decay_iters or t.train_iters
    if t.lr_warmup_iters > decay:
        raise UserError(f"--lr-warmup-iters {t.lr_warmup_iters} exceeds --lr-decay-iters {decay}")
    for name in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size"):
        if getattr(m, name) != 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(m, name)}: only 1 is supported (Whisper "
                            "trains data-parallel; use --parallel fsdp to shard large-v3)")
    for name, key in (("seq_length", "max_target_positions"), ("max_position_embeddings", "max_source_positions")):
        value = getattr(m, name)
        if value is not None and value != model.fields[key]:
            raise UserError(f"--{name.replace('_', '-')} {value} contradicts model.json {key} "
                            f"{model.fields[key]}: drop the flag or make them equal")
    if t.bf16 and t.precision == "fp32":
        raise UserError("--bf16 contradicts --precision fp32: drop one")
    if m.use_distributed_optimizer and cfg.parallel.strategy == "ddp":
        raise UserError("--use-distributed-optimizer contradicts --parallel ddp: drop one (the distributed "
                        "optimizer is --parallel fsdp here)")
    return cfg.parallel.strategy or ("fsdp" if m.use_distributed_optimizer else "ddp")


def parse_args(argv: list[str] | None = None, *, check_files: bool = True) -> TrainerConfig:
    """Build the TrainerConfig from argv and the two JSON files. ``check_files`` also checks the processor."""
    ns = build_parser().parse_args(argv)
    given = flags.sections_from(ns, _sections())
    model = load_model_json(given["megatron"].mm_model)
    data = load_data_json(given["megatron"].mm_data)
    cfg = TrainerConfig(model=model, data=data, **given)
    flags.check_ranges(ns, _sections())
    cfg.parallel.strategy = _check_flags(cfg)
    if check_files:
        check_processor(model, data)
    # the defaults that depend on other settings
    cfg.training.max_label_tokens = int(model.fields["max_target_positions"])
    c = cfg.checkpoint
    c.save = str(Path(c.save))
    c.load = c.load or c.save
    cfg.metrics.metrics_file = cfg.metrics.metrics_file or str(Path(c.save).absolute().parent / "metrics.jsonl")
    return cfg
