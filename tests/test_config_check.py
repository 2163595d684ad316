"""Typed configuration: every field of every command's configuration is checked against its
declaration (annotation and range), and a bad value on the command line is one line naming
what the user wrote, before any work."""

import copy
import dataclasses
import os
import typing
from typing import Any

import pytest

import ptune.tasks  # noqa: F401  registers the tasks
from conftest import REPO
from ptune import config_check, evaluation, ginconfig, infer, trainer
from ptune.errors import UserError
from ptune.tasks import demo

# The configuration each command builds (`ptune.command_config.configured`; plan builds the
# training run's, ensemble holds eval's).
COMMAND_CONFIGS = {
    "train": trainer.TrainConfig,
    "pretrain": trainer.TrainConfig,
    "plan": trainer.TrainConfig,
    "eval": evaluation.EvalConfig,
    "infer": infer.InferConfig,
    "ensemble": infer.EnsembleConfig,
}


def _valid(cls):
    """A configuration that passes, from the defaults and a plain value per required field."""
    required = {
        "model_dir": "runs/x",
        "mixture_or_task_name": "ptune_demo",
        "checkpoint_path": "model",
        "prompt_files": {"ptune_demo": "p.npy"},
        "input_file": "in.jsonl",
        "output_file": "out.jsonl",
        "eval": evaluation.EvalConfig(mixture_or_task_name="ptune_demo", checkpoint_path="model"),
    }
    fields = [f for f in dataclasses.fields(cls) if f.init]
    missing = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if cls is infer.EnsembleConfig:
        required["prompt_files"] = ["a.npy", "b.npy"]
    return cls(**{name: required[name] for name in missing})


def _fields(config, path=()):
    """(path, owner config, field, declaration) of every field, nested configurations too."""
    for name, declared in config_check.declarations(type(config)).items():
        yield path + (name,), config, name, declared
        value = getattr(config, name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _fields(value, path + (name,))


def _replaced(config, path, value):
    """`config` with the field at `path` set to `value`, bypassing `__post_init__` (the
    mechanism under test must refuse it on its own)."""
    copied = copy.copy(config)
    if len(path) == 1:
        object.__setattr__(copied, path[0], value)
    else:
        object.__setattr__(copied, path[0], _replaced(getattr(config, path[0]), path[1:], value))
    return copied


def _arms(annotation):
    if typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _fits(value, annotation) -> bool:
    """A plain, shallow reading of an annotation: the test's own oracle."""
    origin = typing.get_origin(annotation) or annotation
    if annotation is type(None):
        return value is None
    if origin is bool:
        return type(value) is bool
    if origin is int:
        return type(value) is int
    if origin is float:
        return type(value) in (int, float)
    if origin is str:
        return type(value) is str
    if origin in (typing.Mapping, dict) or str(origin).endswith("Mapping'>"):
        return isinstance(value, dict)
    if str(origin).endswith("Sequence'>") or origin in (list, tuple):
        return isinstance(value, (list, tuple))
    return isinstance(value, origin) if isinstance(origin, type) else True


# Values of every kind; a field's wrong values are those that fit none of its types.
POOL = ["20", 16.0, True, 7, {"inputs": 1}, ["a"], None]


def _wrong_types(annotation):
    return [v for v in POOL if not any(_fits(v, arm) for arm in _arms(annotation))]


def _out_of_range(annotation, meta):
    """Values of the right type outside the declared range."""
    (arm,) = [a for a in _arms(annotation) if a is not type(None)][:1] or [annotation]
    origin = typing.get_origin(arm) or arm
    args = typing.get_args(arm)
    item = args[-1] if args else origin
    number = float if item is float else int
    bad = []
    if "min" in meta:
        bad.append(number(meta["min"] - 1))
    if "max" in meta:
        bad.append(number(meta["max"] + 1))
    if "below" in meta:
        bad.append(number(meta["below"]))
    if "choices" in meta:
        bad.append("nowhere" if item is str else 99)
    if origin in (int, float, str):
        values = bad
    elif args and len(args) == 2:  # a mapping: each value obeys the range; exactly `keys`
        keys = meta.get("keys", ("a",))
        values = [{k: v for k in keys} for v in bad]
        if "keys" in meta:
            values.append({**{k: 1 for k in keys}, "extra": 1})
            values.append({keys[0]: 1})
    else:  # a sequence: each item obeys the range
        values = [[v] for v in bad]
    return values


@pytest.mark.parametrize("command", sorted(COMMAND_CONFIGS))
def test_every_field_refuses_a_wrong_type_and_an_out_of_range_value(command):
    config = _valid(COMMAND_CONFIGS[command])
    config_check.check(config)  # the defaults pass
    checked = ranged = 0
    skipped = []
    for path, owner, name, declared in _fields(config):
        if declared.annotation is Any:
            skipped.append(name)
            continue
        cases = [(v, "type") for v in _wrong_types(declared.annotation)]
        cases += [(v, "range") for v in _out_of_range(declared.annotation, declared.metadata)]
        assert any(kind == "type" for _, kind in cases), (path, declared)
        for value, kind in cases:
            with pytest.raises(UserError) as e:
                config_check.check(_replaced(config, path, value))
            message = str(e.value)
            assert f"{config_check.gin_name(type(owner))}.{name}" in message, (path, value)
            assert "\n" not in message and " must be " in message and " got " in message
            checked += kind == "type"
            ranged += kind == "range"
    assert checked >= 10 and ranged >= 3, (checked, ranged)
    assert set(skipped) <= {"model", "optimizer", "initializer", "dtype"}, skipped


def test_every_run_configuration_declares_its_ranges():
    """The numbers a run cannot do without are bounded where they are declared."""
    declared = {
        (cls.__name__, name): d.metadata
        for cls in set(COMMAND_CONFIGS.values())
        for name, d in config_check.declarations(cls).items()
    }
    for key in [
        ("TrainConfig", "batch_size"),
        ("TrainConfig", "train_steps"),
        ("TrainConfig", "log_period"),
        ("TrainConfig", "checkpoint_period"),
        ("TrainConfig", "eval_period"),
        ("TrainConfig", "keep_checkpoints"),
        ("TrainConfig", "eval_num_beams"),
        ("TrainConfig", "seed"),
        ("TrainConfig", "task_feature_lengths"),
        ("EvalConfig", "batch_size"),
        ("EvalConfig", "num_beams"),
        ("InferConfig", "num_beams"),
        ("InferConfig", "batch_size"),
    ]:
        assert "min" in declared[key], key
    assert declared[("TrainConfig", "eval_period")]["zero"] == "no evaluation"
    assert declared[("TrainConfig", "task_feature_lengths")]["keys"] == ("inputs", "targets")


def test_a_misspelt_range_is_refused_when_declared():
    @dataclasses.dataclass
    class Bad:
        n: int = dataclasses.field(default=1, metadata={"minimum": 1})

    with pytest.raises(TypeError, match="unknown range keys"):
        config_check.declarations(Bad)


@pytest.mark.parametrize(
    "value, annotation, meta, expected",
    [
        ("20", int, {"min": 1}, "X must be a positive int, got '20' (a string)"),
        (16.0, int, {"min": 1}, "X must be a positive int, got 16.0 (a float)"),
        (True, int, {}, "X must be an int, got True (a bool)"),
        (1, bool, {}, "X must be True or False, got 1 (an int)"),
        (-1, int, {"min": 0, "zero": "off"}, "X must be a positive int or 0 (off), got -1"),
        (
            {"inputs": 1, "targets": "8"},
            typing.Mapping[str, int],
            {"min": 1, "keys": ("inputs", "targets")},
            "X['targets'] must be a positive int, got '8' (a string)",
        ),
        ("abc", typing.Sequence[str], {}, "X must be a list of strings, got 'abc' (a string)"),
        (0, typing.Optional[int], {"min": 1}, "X must be a positive int or None, got 0"),
    ],
)
def test_messages_say_what_is_expected_and_what_was_given(value, annotation, meta, expected):
    with pytest.raises(UserError) as e:
        config_check.check_value(value, config_check.Declared(annotation, meta), "X")
    assert str(e.value).startswith(expected), str(e.value)


def test_an_int_is_a_number_and_none_fits_optional():
    config_check.check_value(1, config_check.Declared(float, {"min": 0}), "X")
    config_check.check_value(None, config_check.Declared(typing.Optional[int], {"min": 1}), "X")


def test_names_are_the_macros_the_user_wrote_else_the_gin_path():
    args = ginconfig.GinArgs(
        files=["runs/demo.gin"],
        bindings=["MODEL_DIR='/tmp/x'", "trainer.TrainConfig.keep_checkpoints=2"],
    )
    ginconfig.parse(args)
    names = ginconfig.check_bindings(trainer.TrainConfig)
    assert names[("train_steps",)] == "TRAIN_STEPS"
    assert names[("prompt", "length")] == "PROMPT_LENGTH"
    assert names[("length_buckets",)] == "LENGTH_BUCKETS"
    assert names[("keep_checkpoints",)] == "trainer.TrainConfig.keep_checkpoints"
    assert names[("loss", "z_loss")] == "step.LossConfig.z_loss"


# ---- the command line: one line, exit 2, nothing written

DEMO_TRAIN = ["train", "--gin_file=runs/demo.gin"]
DEMO_EVAL = [
    "eval",
    "--gin_file=models/ptune_demo.gin",
    "--gin_file=runs/eval.gin",
    "--gin.MIXTURE_OR_TASK_NAME='ptune_demo'",
    f"--gin.INITIAL_CHECKPOINT_PATH='{demo.PRETRAINED_MODEL}'",
    "--gin.NO_PROMPT=True",
]


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--gin.TRAIN_STEPS='20'"],
            "TRAIN_STEPS must be a positive int or 0 (saves the initial state only), got '20'",
        ),
        (["--gin.BATCH_SIZE=16.0"], "BATCH_SIZE must be a positive int, got 16.0 (a float)"),
        (["--gin.SEED='abc'"], "SEED must be a non-negative int, got 'abc' (a string)"),
        (
            ["--gin.optimizers.prompt_tuning_adafactor.learning_rate='0.3'"],
            "optimizers.prompt_tuning_adafactor.learning_rate must be a non-negative number, "
            "got '0.3'",
        ),
        (  # a configurable function's range rides on its parameter's annotation
            ["--gin.optimizers.prompt_tuning_adafactor.decay_rate=5.0"],
            "optimizers.prompt_tuning_adafactor.decay_rate must be a number in [0, 1], got 5.0",
        ),
        (
            ["--gin.optimizers.prompt_tuning_adafactor.clipping_threshold=-1.0"],
            "optimizers.prompt_tuning_adafactor.clipping_threshold must be a non-negative "
            "number or None, got -1.0",
        ),
        (["--gin.LOG_PERIOD=0"], "LOG_PERIOD must be a positive int, got 0"),
        (["--gin.CHECKPOINT_PERIOD=0"], "CHECKPOINT_PERIOD must be a positive int, got 0"),
        (["--gin.EVAL_PERIOD=-1"], "EVAL_PERIOD must be a positive int or 0 (no evaluation)"),
        (["--gin.trainer.TrainConfig.eval_num_beams=0"], "trainer.TrainConfig.eval_num_beams"),
        (["--gin.PROMPT_LENGTH=0"], "PROMPT_LENGTH must be a positive int, got 0"),
        (["--gin.trainer.TrainConfig.keep_checkpoints=0"], "trainer.TrainConfig.keep_checkpoints"),
        (
            ["--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 9, 'extra': 3}"],
            "TASK_FEATURE_LENGTHS must be a dict {'inputs': positive int, 'targets': positive",
        ),
        (["--gin_bindings=TRAIN_STEPS = (("], "gin binding 'TRAIN_STEPS = ((': EOF"),
        (["--gin_bindings=TRAIN_STEPS"], "malformed gin binding"),
        (["--gin_bindings=trainer.TrainConfig.train_steps = 3 4"], "gin binding"),
        # A misspelt field or configurable: the closest one is named, where one is close.
        (
            ["--gin.trainer.TrainConfig.eval_peroid=3"],
            "gin binding 'trainer.TrainConfig.eval_peroid=3': Configurable "
            "'trainer.TrainConfig' doesn't have a parameter named 'eval_peroid'; did you mean "
            "'eval_period'?",
        ),
        (
            ["--gin.t5.T5Config.emb_dimm=8"],
            "gin binding 't5.T5Config.emb_dimm=8': Configurable 't5.T5Config' doesn't have a "
            "parameter named 'emb_dimm'; did you mean 'emb_dim'?",
        ),
        (
            ["--gin_bindings=trainer.TrainConfg.eval_period = 3"],
            "gin binding 'trainer.TrainConfg.eval_period = 3': No configurable matching "
            "'trainer.TrainConfg'; did you mean 'trainer.TrainConfig'?",
        ),
        (
            ["--gin.trainer.TrainConfig.zzz=1"],
            "gin binding 'trainer.TrainConfig.zzz=1': Configurable 'trainer.TrainConfig' "
            "doesn't have a parameter named 'zzz'.",
        ),
        (
            ["--gin.optimizers.prompt_tuning_adafactor.learning_rate=float('nan')"],
            "--gin.optimizers.prompt_tuning_adafactor.learning_rate=float('nan'): gin values "
            "are literals (numbers, 'strings', lists, dicts, True, None) or @configurables(), "
            "not Python calls such as float('nan')",
        ),
        (["--gin_search_paths=/no/such/dir"], "--gin_search_paths: /no/such/dir is not a dir"),
        (["--spm_path=a.model", "--spm_path=b.model"], "--spm_path is given twice (a.model and"),
        (
            ["--task_file=mine:train=a.jsonl,train=b.jsonl"],
            "task spec 'mine:train=a.jsonl,train=b.jsonl': train is given twice",
        ),
        (  # checked where it is built, not inside the jitted step after the model loaded
            ["--gin.step.LossConfig.loss_normalizing_factor='NUM_TOKENS'"],
            "step.LossConfig.loss_normalizing_factor must be None, 'NUM_REAL_TARGET_TOKENS' "
            "or a positive number, got 'NUM_TOKENS'",
        ),
    ],
)
def test_a_bad_training_value_is_one_line_before_any_work(tmp_path, capsys, args, expected):
    from ptune import cli

    model_dir = tmp_path / "run"
    code = cli.main(DEMO_TRAIN + [f"--gin.MODEL_DIR='{model_dir}'"] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"ptune: error: {expected}"), err
    if expected.endswith((".", "?")):  # a whole message: nothing follows it
        assert err[0] == f"ptune: error: {expected}", err
    assert not model_dir.exists()


def test_a_gin_file_that_is_a_directory_is_named_so(tmp_path, capsys):
    from ptune import cli

    code = cli.main(DEMO_TRAIN + [f"--gin_file={tmp_path}", f"--gin.MODEL_DIR='{tmp_path}/run'"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        f"ptune: error: gin file '{tmp_path}' is a directory; name a .gin file"
    ]


def test_gin_files_that_include_each_other_are_one_line(tmp_path, capsys):
    from ptune import cli

    (tmp_path / "a.gin").write_text(f"include '{tmp_path / 'b.gin'}'\n")
    (tmp_path / "b.gin").write_text(f"include '{tmp_path / 'a.gin'}'\n")
    model_dir = tmp_path / "run"
    code = cli.main(
        DEMO_TRAIN + [f"--gin_file={tmp_path / 'a.gin'}", f"--gin.MODEL_DIR='{model_dir}'"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        f"ptune: error: gin file {tmp_path / 'a.gin'}: its includes form a cycle (a file "
        "includes itself, directly or through the files it includes)"
    ]
    assert not model_dir.exists()


@pytest.mark.parametrize(
    "command, args, expected",
    [
        (DEMO_EVAL, ["--gin.BATCH_SIZE=0"], "BATCH_SIZE must be a positive int, got 0"),
        (
            DEMO_EVAL,
            ["--gin.evaluation.EvalConfig.num_beams=0"],
            "evaluation.EvalConfig.num_beams must be a positive int, got 0",
        ),
        (
            ["ensemble", *DEMO_EVAL[1:]],
            ["--gin.BATCH_SIZE='8'", "--prompt_files=a.npy,b.npy"],
            "BATCH_SIZE must be a positive int, got '8' (a string)",
        ),
    ],
)
def test_a_bad_eval_value_is_one_line_before_any_work(tmp_path, capsys, command, args, expected):
    from ptune import cli

    out = tmp_path / "out"
    code = cli.main(command + [f"--gin.EVAL_OUTPUT_DIR='{out}'"] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"ptune: error: {expected}"), err
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--gin.NUM_BEAMS=0"], "NUM_BEAMS must be a positive int, got 0 (an int)"),
        (["--gin.TOP_P=0.0"], "TOP_P must be in (0, 1], got 0: sampling from no token"),
        (
            ["--gin.TOP_K=5"],  # greedy: it would be ignored
            "TOP_K (5) and TOP_P (1.0) shape sampling, but TEMPERATURE is 0 (greedy decoding "
            "would ignore them): set TEMPERATURE > 0 to sample",
        ),
        (
            ["--gin.NUM_BEAMS=2", "--gin.TEMPERATURE=0.5"],
            "choose beam search (NUM_BEAMS > 1) or sampling (TEMPERATURE > 0)",
        ),
    ],
)
def test_infer_refuses_decoding_settings_before_any_work(tmp_path, capsys, flags, expected):
    from ptune import cli

    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"task": "ptune_demo", "inputs": "good"}\n')
    output = tmp_path / "predictions.jsonl"
    code = cli.main(
        [
            "infer",
            "--gin_file=models/ptune_demo.gin",
            "--gin_file=runs/infer.gin",
            f"--gin.INITIAL_CHECKPOINT_PATH='{demo.PRETRAINED_MODEL}'",
            f"--gin.PROMPT_FILES={{'ptune_demo': '{tmp_path / 'p.npy'}'}}",
            f"--gin.INFER_INPUT_FILE='{requests}'",
            f"--gin.INFER_OUTPUT_FILE='{output}'",
            *flags,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"ptune: error: {expected}"]
    assert sorted(os.listdir(tmp_path)) == ["requests.jsonl"]


@pytest.mark.parametrize(
    "settings, expected",
    [
        ((0, 0.0, 0, 1.0), "num_beams must be at least 1, got 0"),
        ((1, -0.5, 0, 1.0), "temperature and top_k must be >= 0, got -0.5 and 0"),
        ((1, 0.7, 0, 1.5), "top_p must be in (0, 1], got 1.5"),
        ((1, 0.0, 5, 1.0), "top_k (5) and top_p (1.0) shape sampling, but temperature is 0"),
        ((4, 0.7, 0, 1.0), "choose beam search (num_beams > 1) or sampling (temperature > 0)"),
    ],
)
def test_the_servers_api_refuses_the_decoding_settings_infer_refuses(settings, expected):
    """One rule for both (`search.check_decoding`): `ptune infer` before any work, in its gin
    names (above); `Server.generate` in its parameter names."""
    from ptune.models import search

    with pytest.raises(UserError) as e:
        search.check_decoding(*settings)
    assert str(e.value).startswith(expected), e.value
    search.check_decoding(4, 0.0, 0, 1.0)  # beams, greedy
    search.check_decoding(1, 0.7, 40, 0.9)  # sampling


def _gin_files(kind):
    return sorted(f"{kind}/{name}" for name in os.listdir(os.path.join(REPO, "gin", kind)))


# Values for the macros the shipped runs leave %gin.REQUIRED.
REQUIRED = {
    "MODEL_DIR": "'/tmp/x'",
    "MIXTURE_OR_TASK_NAME": "'ptune_demo'",
    "INITIAL_CHECKPOINT_PATH": "'/tmp/ckpt'",
    "INITIAL_PROMPT_FILE": "'/tmp/p.npy'",
    "PROMPT_FILES": "{'ptune_demo': '/tmp/p.npy'}",
    "INFER_INPUT_FILE": "'/tmp/in.jsonl'",
    "INFER_OUTPUT_FILE": "'/tmp/out.jsonl'",
}


def test_every_shipped_run_and_prompt_passes_the_check_as_the_commands_build_it():
    """What `configured` builds from each shipped run file (with each prompt file where the run
    has a prompt) is checked whole, and passes."""
    built = []
    for run in _gin_files("runs"):
        if run == "runs/base.gin":
            continue
        fn = {"runs/eval.gin": evaluation.EvalConfig, "runs/infer.gin": infer.InferConfig}.get(
            run, trainer.TrainConfig
        )
        with_prompt = run in ("runs/prompt_tuning.gin", "runs/demo.gin")
        for prompt in [None] + (_gin_files("prompts") if with_prompt else []):
            files = ([prompt] if prompt else []) + [run]
            resolved = [ginconfig.resolve_gin_file(f) for f in files]
            known = ginconfig.file_macros(resolved)
            bindings = [f"{k}={v}" for k, v in REQUIRED.items() if k in known]
            ginconfig.parse(ginconfig.GinArgs(files=files, bindings=bindings))
            built.append(ginconfig.call(fn, model=ginconfig.model_fields() or None))
    assert len(built) >= 8 + len(_gin_files("prompts"))
