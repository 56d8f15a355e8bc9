"""Published results as data, and the verdict of a sweep group against one of them.

`REGISTRY` maps an anchor name to published figures: the corpus (rnnjax's name for it), the
report-row fields the figures are in (`test_ppl`, `valid_ppl`, `test_bpc`, `test_loss` and
`valid_loss` in nats per token), a relative tolerance, the source, the rnnjax config meant to
reproduce it, and how the number was checked here. Tolerances are judgment calls: about the
seed-to-seed spread of such runs plus what differs between codebases (splits, evaluation
batching), not a statistical test.

A sweep says which group is compared with which anchor by a dict beside `get_sweep()` in its
config file, read by `rnnjax report` through the config path `sweep.json` records:

    ANCHORS = {"cell=lstm": "zaremba_small"}

or on the command line, `rnnjax report DIR --anchor cell=lstm=zaremba_small` (repeatable;
flags override the file). A selector is `NAME=VALUE[,NAME=VALUE...]` in the run-name form
(`cell=gru,layers=2`), or `*` for every group; it picks every group whose swept values match all
its pairs, and a later selector overrides an earlier one for the groups both match.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnjax.errors import DataError
from rnnjax.files import read_json
from rnnjax.sweep import run_name


@dataclass(frozen=True)
class Anchor:
    name: str
    corpus: str  # rnnjax corpus name: "ptb", "ptb_char", "tinyshakespeare"
    figures: dict[str, float]  # report-row field -> published value
    rel_tol: float  # |measured - published| <= rel_tol * published counts as reproduced
    source: str
    preset: str | None = None  # the rnnjax config meant to reproduce it
    checked: str = field(default="as cited in the rnnjax benchmark brief; not checked against the paper here")

    def describe(self) -> str:
        """One line for a report: name, corpus, figures, tolerance, source, how it was checked."""
        figures = ", ".join(f"{f} {v:g}" for f, v in self.figures.items())
        return (f"`{self.name}` ({self.corpus}, {figures}, ± {self.rel_tol * 100:g}%): {self.source}. "
                f"Checked: {self.checked}.")


_ZAREMBA = ("Zaremba, Sutskever & Vinyals 2014, Recurrent Neural Network Regularization "
            "(arXiv:1409.2329), Table 1")
_ZAREMBA_CHECKED = ("medium and large match takase.github.io/lm_performance (a listing of PTB results); "
                    "small as cited in the brief")
_GAL = ("Gal & Ghahramani 2016, A Theoretically Grounded Application of Dropout in Recurrent Neural Networks "
        "(NeurIPS 2016, arXiv:1512.05287), Table 1, variational LSTM, untied weights")
_GAL_CHECKED = ("as cited in the brief; not found in the stored copies searched here (a listing, "
                "takase.github.io/lm_performance, gives the tied-weight variant: 79.2 medium, 75.0 large)")
_MERITY_2018 = ("Merity, Keskar & Socher 2018, An Analysis of Neural Language Modeling at Multiple Scales "
                "(arXiv:1803.08240)")
_FENG = ("Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, Were RNNs All We Needed? (arXiv:2410.01201), "
         "Shakespeare character-level language modelling, test loss in nats")

REGISTRY: dict[str, Anchor] = {a.name: a for a in (
    Anchor("zaremba_small", "ptb", {"test_ppl": 114.5, "valid_ppl": 120.7}, 0.02,
           f"{_ZAREMBA}, non-regularized LSTM (small: 2x200)", "ptb:small", _ZAREMBA_CHECKED),
    Anchor("zaremba_medium", "ptb", {"test_ppl": 82.7, "valid_ppl": 86.2}, 0.02,
           f"{_ZAREMBA}, medium regularized LSTM (2x650, dropout 0.5)", "ptb:medium", _ZAREMBA_CHECKED),
    Anchor("zaremba_large", "ptb", {"test_ppl": 78.4, "valid_ppl": 82.2}, 0.02,
           f"{_ZAREMBA}, large regularized LSTM (2x1500, dropout 0.65)", "ptb:large", _ZAREMBA_CHECKED),
    Anchor("gal_medium", "ptb", {"test_ppl": 79.7}, 0.02, f"{_GAL}, medium (2x650)", None, _GAL_CHECKED),
    Anchor("gal_large", "ptb", {"test_ppl": 75.2}, 0.02, f"{_GAL}, large (2x1500)", None, _GAL_CHECKED),
    Anchor("awd_lstm", "ptb", {"test_ppl": 57.3, "valid_ppl": 60.0}, 0.02,
           "Merity, Keskar & Socher 2017, Regularizing and Optimizing LSTM Language Models (arXiv:1708.02182), "
           "AWD-LSTM with fine-tuning, no cache", None,
           "test 57.3 is in the paper's abstract; valid 60.0 from takase.github.io/lm_performance"),
    Anchor("awd_lstm_repro", "ptb", {"test_ppl": 58.8}, 0.02,
           "AWD-LSTM on PTB as commonly reproduced with the released code (salesforce/awd-lstm-lm)", None,
           f"as cited in the brief; a results listing (wizwand.com) gives 58.8 for {_MERITY_2018}"),
    Anchor("awd_lstm_char", "ptb_char", {"test_bpc": 1.175}, 0.02,
           f"{_MERITY_2018}, 3-layer AWD-LSTM on PTB characters", None,
           "1.175 bpc for the 3-layer AWD-LSTM in the paperswithcode listing of that paper (the brief "
           "attributes it to Merity et al. 2017; it is the 2018 paper)"),
    Anchor("feng_mingru", "tinyshakespeare", {"test_loss": 1.548}, 0.02, f"{_FENG}, minGRU"),
    Anchor("feng_minlstm", "tinyshakespeare", {"test_loss": 1.555}, 0.02, f"{_FENG}, minLSTM"),
    Anchor("charrnn", "tinyshakespeare", {"valid_loss": 1.395}, 0.03,
           "Karpathy's char-rnn on Tiny Shakespeare, validation loss in nats", "charrnn:tinyshakespeare"),
)}

LABELS = {"test_ppl": "test", "valid_ppl": "valid", "test_bpc": "test", "valid_bpc": "valid",
          "test_loss": "test", "valid_loss": "valid"}


def lookup(name: str) -> Anchor:
    """The registered anchor `name`; a one-line error naming the known ones otherwise."""
    if name not in REGISTRY:
        raise DataError(f"unknown anchor {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def parse_flags(texts: list[str]) -> dict[str, str]:
    """`--anchor SELECTOR=ANCHOR` texts (`cell=lstm=zaremba_small`) as {selector: anchor name}."""
    out = {}
    for text in texts:
        selector, _, name = text.rpartition("=")
        if selector != "*" and "=" not in selector:
            raise DataError(f"--anchor {text!r}: expected NAME=VALUE[,NAME=VALUE...]=ANCHOR, "
                            f"e.g. cell=lstm=zaremba_small")
        out[selector] = lookup(name).name
    return out


def from_sweep_config(sweep_dir: Path) -> dict[str, str]:
    """The `ANCHORS` dict of the config file `sweep_dir/sweep.json` names; {} when there is none.

    The path is the one the sweep was started with (relative to its working directory), so a
    report run from elsewhere may not find the file; `--anchor` works anywhere.
    """
    sweep = read_json(Path(sweep_dir) / "sweep.json")
    path = Path(str(sweep.get("config", "")).partition(":")[0]) if isinstance(sweep, dict) else None
    if path is None or not path.is_file():
        return {}
    spec = importlib.util.spec_from_file_location(f"rnnjax_anchors_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    anchors = getattr(module, "ANCHORS", {})
    if not isinstance(anchors, dict):
        raise DataError(f"{path}: ANCHORS must be a dict of selector -> anchor name, "
                        f"e.g. {{'cell=lstm': 'zaremba_small'}}")
    return {str(k): lookup(v).name for k, v in anchors.items()}


def matches(selector: str, values: dict[str, Any], names: dict[str, str]) -> bool:
    """Whether a group with swept `values` ({key: value}) matches every `NAME=VALUE` of `selector`.

    NAME is a key's short name (`names`, as in run names) or its full dotted key; `*` matches any group.
    """
    if selector == "*":
        return True
    by_name = {**{k: k for k in values}, **{names[k]: k for k in values if k in names}}
    for pair in selector.split(","):
        name, _, text = pair.partition("=")
        if name not in by_name:
            raise DataError(f"anchor selector {selector!r}: {name!r} is not a swept key "
                            f"(swept: {', '.join(names.get(k, k) for k in values) or 'none'})")
        key = by_name[name]
        if run_name({key: values[key]}, {key: name}) != f"{name}={text}":
            return False
    return True


def assign(assignments: dict[str, str], values: dict[str, Any], names: dict[str, str]) -> Anchor | None:
    """The anchor of the last selector in `assignments` that matches a group's swept `values`."""
    chosen = None
    for selector, name in assignments.items():
        if matches(selector, values, names):
            chosen = lookup(name)
    return chosen


def _decimals(value: float) -> int:
    text = repr(float(value))
    return max(1, len(text.partition(".")[2]))


def verdict(anchor: Anchor, measured: dict[str, float | None], corpus: str | None) -> str:
    """"reproduced (114.6 vs 114.5 ± 2%)" or "not reproduced: 121.3 vs 114.5 ± 2%", from a group's means.

    Every figure of the anchor the group has a value for is compared; all must be within the
    tolerance. Several figures are labelled ("test 114.6 vs 114.5 ± 2%, valid ...").
    """
    if corpus != anchor.corpus:
        return f"not comparable: corpus {corpus}, {anchor.name} is on {anchor.corpus}"
    compared = [(f, measured[f], v) for f, v in anchor.figures.items() if measured.get(f) is not None]
    if not compared:
        return f"not comparable: no {' or '.join(anchor.figures)} measured"
    tol = f"{anchor.rel_tol * 100:g}%"
    parts = [(f"{LABELS[f]} " if len(compared) > 1 else "") + f"{m:.{_decimals(v)}f} vs {v:g} ± {tol}"
             for f, m, v in compared]
    text = ", ".join(parts)
    if all(abs(m - v) <= anchor.rel_tol * v for _, m, v in compared):
        return f"reproduced ({text})"
    return f"not reproduced: {text}"
