"""Trainer configuration: MindSpeed-MM's files accepted unchanged, bad or contradictory settings named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from whisper_trainer.config import build_parser, parse_args, trainer_flags
from whisper_trainer.model import causal_lm_inputs
from whisper_trainer.optim import LRSchedule

from whisper_k8s.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "helm" / "files" / "model-presets" / "tiny.json"


def data_doc(processor_dir: Path, **basic) -> dict:
    """The reference data.json with local paths in place of the Hub names."""
    doc = json.loads((ROOT / "tests/fixtures/reference/mindspeed-mm/data.json").read_text())
    doc["dataset_param"]["basic_parameters"].update({"dataset_name_or_path": "/data", **basic})
    for section in (doc["dataset_param"]["preprocess_parameters"], doc["dataloader_param"]["collate_param"]):
        section["processor_name_or_path"] = str(processor_dir)
    return doc


@pytest.fixture()
def files(tmp_path, processor_dir):
    def write(model: dict | None = None, data: dict | None = None) -> list[str]:
        model_json, data_json = tmp_path / "model.json", tmp_path / "data.json"
        model_json.write_text(json.dumps(model if model is not None else json.loads(TINY.read_text())))
        data_json.write_text(json.dumps(data if data is not None else data_doc(processor_dir)))
        return ["--mm-model", str(model_json), "--mm-data", str(data_json), "--save", str(tmp_path / "ckpt")]

    return write


def reference_model() -> dict:
    return json.loads((ROOT / "tests/fixtures/reference/mindspeed-mm/model.json").read_text())


def test_reference_files_and_seed_flags_are_accepted_unchanged(files):
    argv = files(model=reference_model()) + [
        "--micro-batch-size", "8", "--seq-length", "448", "--max-position-embeddings", "1500", "--lr", "1e-5",
        "--train-iters", "300", "--weight-decay", "0.0", "--bf16", "--use-distributed-optimizer",
        "--overlap-grad-reduce", "--overlap-param-gather", "--num-workers", "4", "--log-interval", "1",
        "--save-interval", "10000", "--tensor-model-parallel-size", "1", "--pipeline-model-parallel-size", "1",
    ]
    cfg = parse_args(argv)
    assert cfg.model.fields == reference_model()  # kept verbatim, "bf16" dtype included
    assert cfg.model.dtype == "bfloat16" and cfg.model.ckpt_path == "your pretrined ckpt path"
    assert cfg.parallel.strategy == "fsdp"  # the distributed optimizer shards optimizer state
    assert cfg.data.languages == ["hi"] and cfg.data.task == "transcribe"
    assert cfg.global_batch_size(world_size=16) == 128  # default: micro x world (the seed's script)
    assert cfg.training.bf16 and cfg.training.lr_decay_iters is None and cfg.training.lr_decay_style == "linear"
    assert cfg.checkpoint.load == cfg.checkpoint.save
    assert cfg.metrics.metrics_file.endswith("metrics.jsonl")
    hf = cfg.model.hf_kwargs()
    assert hf["tie_word_embeddings"] is False and "ckpt_path" not in hf and "torch_dtype" not in hf


def test_comma_list_of_languages(files, processor_dir):
    cfg = parse_args(files(data=data_doc(processor_dir, language="en, hi")))
    assert cfg.data.languages == ["en", "hi"]


@pytest.mark.parametrize(("change", "named"), [
    (lambda m: m.update(hidden_size=8), "hidden_size"),
    (lambda m: m.update(d_model=-1), "d_model"),
    (lambda m: m.pop("vocab_size"), "vocab_size"),
    (lambda m: m.update(torch_dtype="bf8"), "torch_dtype"),
    (lambda m: m.update(encoder_attention_heads=5), "encoder_attention_heads"),
    (lambda m: m.update(tie_word_embeddings=True), "tie_word_embeddings"),
    (lambda m: m.update(num_hidden_layers=3), "num_hidden_layers"),
    (lambda m: m.update(num_mel_bins=80), "num_mel_bins"),  # the processor has 128
])
def test_bad_model_json_names_the_field(files, change, named):
    model = json.loads(TINY.read_text())
    change(model)
    with pytest.raises(UserError, match=named):
        parse_args(files(model=model))


@pytest.mark.parametrize(("change", "named"), [
    (lambda d: d["dataset_param"].update(extra=1), "dataset_param.extra"),
    (lambda d: d["dataloader_param"].update(shuffle="yes"), "dataloader_param.shuffle"),
    (lambda d: d["dataset_param"]["basic_parameters"].update(language=""), "basic_parameters.language"),
    (lambda d: d["dataset_param"]["basic_parameters"].pop("dataset_name_or_path"), "dataset_name_or_path"),
    (lambda d: d["dataloader_param"]["collate_param"].update(processor_name_or_path="/x"), "processor_name_or_path"),
    (lambda d: d["dataset_param"]["preprocess_parameters"].update(task="dance"), "task"),
])
def test_bad_data_json_names_the_field(files, processor_dir, change, named):
    doc = data_doc(processor_dir)
    change(doc)
    with pytest.raises(UserError, match=named):
        parse_args(files(data=doc))


@pytest.mark.parametrize(("flags", "named"), [
    (["--save-interval", "0"], "--save-interval"),
    (["--micro-batch-size", "0"], "--micro-batch-size"),
    (["--lr", "-1"], "--lr"),
    (["--min-lr", "1", "--lr", "0.1"], "--min-lr"),
    (["--lr-warmup-iters", "400", "--train-iters", "300"], "--lr-warmup-iters"),
    (["--seq-length", "512"], "max_target_positions"),
    (["--max-position-embeddings", "3000"], "max_source_positions"),
    (["--tensor-model-parallel-size", "2"], "--tensor-model-parallel-size"),
    (["--use-distributed-optimizer", "--parallel", "ddp"], "--use-distributed-optimizer"),
    (["--num-workers", "65"], "--num-workers must be <= 64, found 65"),
    (["--seed", "-1"], "--seed must be >= 0, found -1"),
    (["--lr", "0"], "--lr must be > 0, found 0"),
])
def test_bad_flags_name_the_flag(files, flags, named):
    with pytest.raises(UserError, match=named):
        parse_args(files() + flags)


def test_flags_are_generated_from_the_config_fields(files):
    """One dataclass field per flag: its default reaches the config, a given value reaches the field."""
    specs = trainer_flags()
    assert len({spec.flag for spec in specs}) == len(specs) and len(specs) > 30
    help_text = build_parser().format_help()
    assert all(spec.flag in help_text and spec.help[:20] in " ".join(help_text.split()) for spec in specs)
    derived = {"save", "load", "metrics_file", "strategy", "mm_model", "mm_data"}  # set from other settings
    cfg = parse_args(files())
    for spec in specs:
        if spec.name not in derived:
            assert getattr(getattr(cfg, spec.section), spec.name) == spec.default, spec.flag
    cfg = parse_args(files() + ["--keep-checkpoints", "5", "--distributed-timeout-minutes", "7", "--parallel",
                                "fsdp", "--num-workers", "0", "--no-load-rng", "--exit-interval", "9",
                                "--attention-backend", "math", "--adam-beta2", "0.95"])
    assert (cfg.checkpoint.keep, cfg.parallel.timeout_minutes, cfg.parallel.strategy) == (5, 7, "fsdp")
    assert (cfg.training.num_workers, cfg.training.exit_interval, cfg.training.adam_beta2) == (0, 9, 0.95)
    assert cfg.checkpoint.no_load_rng and not cfg.checkpoint.no_load_optim and cfg.parallel.attention_backend == "math"


def test_missing_files_are_named(tmp_path, processor_dir):
    with pytest.raises(UserError, match="--mm-model .*no such file"):
        parse_args(["--mm-model", str(tmp_path / "nope.json"), "--mm-data", "x", "--save", "s"])
    bad = data_doc(processor_dir)
    bad["dataset_param"]["preprocess_parameters"]["processor_name_or_path"] = str(tmp_path / "missing")
    bad["dataloader_param"]["collate_param"]["processor_name_or_path"] = str(tmp_path / "missing")
    (tmp_path / "d.json").write_text(json.dumps(bad))
    with pytest.raises(UserError, match="processor_name_or_path"):
        parse_args(["--mm-model", str(TINY), "--mm-data", str(tmp_path / "d.json"), "--save", "s"])


def test_global_batch_must_divide_by_micro_batch_times_world(files):
    cfg = parse_args(files() + ["--micro-batch-size", "4", "--global-batch-size", "24"])
    assert cfg.accumulation_steps(world_size=3) == 2
    with pytest.raises(UserError, match="--global-batch-size 24 .* world size 4"):
        cfg.accumulation_steps(world_size=4)


def test_learning_rate_schedule_follows_megatron(files):
    cfg = parse_args(files() + ["--lr", "1.0", "--min-lr", "0.1", "--lr-warmup-iters", "2",
                                "--train-iters", "12", "--lr-decay-iters", "10", "--lr-decay-style", "cosine"])
    sched = LRSchedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0), cfg.training)
    lrs = [sched.lr_at(step) for step in range(12)]
    assert lrs[:3] == [0.0, 0.5, 1.0]  # linear warmup from 0 (Megatron)
    assert lrs[6] == pytest.approx(0.55)  # cosine half way between warmup end (2) and decay end (10)
    assert lrs[10] == pytest.approx(0.1) and lrs[11] == 0.1  # min-lr from decay end on
    linear = LRSchedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0),
                        parse_args(files() + ["--lr", "1.0", "--train-iters", "4"]).training)
    assert [linear.lr_at(s) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]  # defaults: no warmup, linear to 0
    sched.step()
    sched.step()
    assert sched.optimizer.param_groups[0]["lr"] == 1.0
    restored = LRSchedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0), cfg.training)
    restored.load_state_dict(sched.state_dict())
    assert restored.lr == sched.lr and restored.num_steps == 2


def test_decoder_inputs_do_not_repeat_the_start_token():
    sot, pad = 50258, 50256
    labels = torch.tensor([[sot, 50259, 50360, 50364, 400, 50257, -100]])
    inputs, targets = causal_lm_inputs(labels, sot, pad)
    assert inputs.tolist() == [[sot, 50259, 50360, 50364, 400, 50257]]
    assert targets.tolist() == [[50259, 50360, 50364, 400, 50257, -100]]
    without = torch.tensor([[50259, 400, -100]])
    inputs, targets = causal_lm_inputs(without, sot, pad)
    assert inputs.tolist() == [[sot, 50259, 400]] and targets.tolist() == [[50259, 400, -100]]
