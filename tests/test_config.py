"""Config files, presets, overrides, and one-line errors naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnjax import cli, config as config_lib, config_keys, rundir
from rnnjax.config import resolve as resolve_config
from rnnjax.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_ptb_presets_match_zaremba():
    small = resolve_config("ptb:small", {})
    medium = resolve_config(f"{CONFIGS}/ptb.py:medium", {})
    large = resolve_config("ptb:large", {})
    assert (small.model.hidden_size, small.train.num_epochs, small.train.decay_after_epochs,
            small.train.decay_rate, small.model.dropout, small.train.clip_norm, small.train.seq_len) == \
        (200, 13, 4, 0.5, 0.0, 5.0, 20)
    assert (medium.model.hidden_size, medium.train.num_epochs, medium.model.dropout, medium.train.seq_len,
            medium.model.init_scale) == (650, 39, 0.5, 35, 0.05)
    assert (large.model.hidden_size, large.train.num_epochs, large.model.dropout, large.train.clip_norm) == \
        (1500, 55, 0.65, 10.0)
    for c in (small, medium, large):
        assert c.train.batch_size == 20 and c.train.learning_rate == 1.0 and c.train.time_sum_loss


def test_overrides_are_typed():
    c = resolve_config("quickstart", {"train.max_steps": "1000", "train.learning_rate": "1", "model.cell": "gru",
                                      "model.tie_embeddings": "true", "model.layer_sizes": "[64, 32]"})
    assert c.train.max_steps == 1000 and c.train.learning_rate == 1.0 and isinstance(c.train.learning_rate, float)
    assert c.model.cell == "gru" and c.model.tie_embeddings is True and c.model.layer_sizes == (64, 32)


@pytest.mark.parametrize("text", ["64,32", "(64, 32)", "[64, 32]"])
def test_tuple_overrides_take_every_config_flags_spelling(text):
    assert resolve_config("quickstart", {"model.layer_sizes": text}).model.layer_sizes == (64, 32)


def test_overrides_leave_the_given_config_alone():
    base = resolve_config("quickstart", {})
    changed = config_lib.apply_overrides(base, {"model.cell": "gru", "model.tie_embeddings": "1"})
    assert (changed.model.cell, changed.model.tie_embeddings) == ("gru", True)
    assert base.model.cell != "gru" and base.model.tie_embeddings is False


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_step' \(did you mean 'train.max_steps'\?\)"):
        resolve_config("quickstart", {"train.max_step": "10"})


@pytest.mark.parametrize("key,value,match", [
    ("train.batch_size", "twenty", "bad value 'twenty' for config key 'train.batch_size': expected int$"),
    ("train.batch_size", "2.5", "bad value .2.5. for config key .train.batch_size.: expected int"),
    ("model.tie_embeddings", "maybe", "expected true or false"),
    ("model.dropout", "1.5", r"'model.dropout' = 1.5: expected in \[0, 1\)"),
    ("train.optimizer", "lbfgs", "'train.optimizer' = 'lbfgs'"),
])
def test_bad_values_name_the_key(key, value, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config("quickstart", {key: value})


def test_bad_files_and_presets(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config_lib.load(str(tmp_path / "nope.py"))
    with pytest.raises(ConfigError, match="has no preset 'huge'"):
        resolve_config("ptb:huge", {})
    bad = tmp_path / "bad.py"
    bad.write_text("from rnnjax.config import defaults\n"
                   "def get_config(preset=None):\n    c = defaults()\n    c.model.hiden_size = 3\n    return c\n")
    with pytest.raises(ConfigError, match="'model.hiden_size' .*'model.hidden_size'"):
        config_lib.load(str(bad))


def test_saved_config_round_trips(tmp_path):
    c = resolve_config("quickstart", {"model.layer_sizes": "[8, 4]"})
    rundir.open_run(tmp_path, c).release()
    back = config_lib.from_json(tmp_path / "config.json")
    assert config_lib.flatten(back) == config_lib.flatten(c)


README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_are_the_key_table_and_each_default_is_in_range():
    flat = config_lib.flatten(config_lib.defaults())
    assert flat == {k.name: k.default for k in config_keys.KEYS}
    for key in config_keys.KEYS:
        assert key.meaning and "|" not in key.meaning, key.name  # one Markdown table cell
        assert key.check is None or key.check(key.default), key.name
    config_lib.validate(config_lib.defaults())


def test_readme_key_table_is_what_config_keys_prints(capsys):
    text = README.read_text()
    begin, end = "<!-- rnnjax config keys -->\n", "<!-- /rnnjax config keys -->"
    table = text[text.index(begin) + len(begin):text.index(end)]
    assert cli.main(["config", "keys"]) == 0
    assert capsys.readouterr().out == table == config_keys.keys_markdown()


def test_resume_safe_keys_come_from_the_table():
    saved = resolve_config("quickstart", {})
    flat = config_lib.flatten(saved)
    for key in config_keys.KEYS:  # every integer key with a range: changed to another valid value
        if isinstance(key.default, bool) or not isinstance(key.default, int) or key.check is None:
            continue
        value = next(v for v in (flat[key.name] + 1, flat[key.name] + 2, 7) if key.check(v))
        changed = resolve_config("quickstart", {key.name: str(value)})
        unsafe, safe = config_lib.resume_changes(saved, changed)
        assert (unsafe, bool(safe)) == (([], True) if key.resume_safe else ([key.name], False)), key.name


def test_weight_decay_without_adamw_is_refused():
    with pytest.raises(ConfigError, match=r"'train.weight_decay' = 0.1: expected 0 with train.optimizer = 'adam'"):
        resolve_config("quickstart", {"train.weight_decay": "0.1"})
    assert resolve_config("quickstart", {"train.weight_decay": "0.1", "train.optimizer": "adamw"})


def test_config_show_prints_the_resolved_config(capsys):
    assert cli.main(["config", "show", "--config", "ptb:small", "--config.seed=3"]) == 0
    shown = json.loads(capsys.readouterr().out)
    want = resolve_config("ptb:small", {"seed": "3"})
    assert config_lib.flatten(config_lib.from_dict(shown, "shown")) == config_lib.flatten(want)
    assert cli.main(["config", "show", "--config.model.cell=lsmt"]) == 2
    assert "did you mean 'lstm'" in capsys.readouterr().err


def test_train_help_lists_shipped_configs_and_presets(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--config.KEY=VALUE" in out and "ptb:small|medium|large" in out and "quickstart" in out
    assert "sweeps/" not in out
