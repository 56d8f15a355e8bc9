"""Task "lm": the language model on a corpus, Zaremba-style stream batches and truncated BPTT.

    rnnjax train --config configs/ptb.py:small --workdir runs/ptb_small   # test ppl 114.5 in the paper

Validation perplexity every `eval.every_epochs` epochs (and `eval.every_steps` steps), the
test split once at the end (with the final parameters, or with `train.patience` the
best-validation checkpoint's), each split read as `eval.batch_size` streams with the state
carried; the kept-best checkpoint is the one of lowest validation perplexity.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from rnnjax import batching, loop, parallel, sampling, steps
from rnnjax.checkpoint import LM_BEST
from rnnjax.config import ConfigDict
from rnnjax.data import load_corpus
from rnnjax.model import check_fits, make_lm
from rnnjax.records import perplexity, ppl_text
from rnnjax.rundir import Run


def scores(nll: float) -> dict:
    """An evaluation record's figures for a mean NLL in nats per token."""
    return {"loss": nll, "perplexity": perplexity(nll), "bpt": nll / math.log(2)}


def make(config: ConfigDict, run: Run, data_dir: Path, log: Callable[[str], None]) -> loop.Task:
    corpus = load_corpus(config, data_dir)
    check_fits(config, corpus.vocab_size, *parallel.memory_limit())
    lm = make_lm(config, corpus.vocab_size)
    t = config.train
    train_ids = corpus.splits["train"]
    spe = batching.steps_per_epoch(len(train_ids), t.batch_size, t.seq_len, config.data.sampling)
    keep_carry = batching.carries_state(config.data.sampling)
    eval_step = steps.make_eval_step(lm)
    run.write_vocab(corpus.vocab)

    def batch(epoch: int, index: int, rows: slice) -> batching.Batch:
        return batching.train_batch(train_ids, t.batch_size, t.seq_len, config.data.sampling, config.seed,
                                    epoch, index, rows)

    def nll(params, split: str) -> float:
        return steps.evaluate(lm, eval_step, params, corpus.splits[split], config)

    def evaluate(params, step: int, train_loss: float) -> loop.Evaluation:
        valid = scores(nll(params, "valid"))
        message = (f"epoch {step / spe:.2f}: train ppl {ppl_text(perplexity(train_loss))} (epoch mean), "
                   f"valid ppl {ppl_text(valid['perplexity'], 3)}"
                   + (f" ({valid['bpt']:.4f} bpc)" if corpus.level == "char" else ""))
        if config.eval.sample_length > 0:
            message += "\n" + sampling.progress_sample(lm, params, corpus, config, step)
        return loop.Evaluation({"valid": valid}, valid["perplexity"], message)

    def finish(params, best_params, tally: loop.Tally) -> tuple[dict, dict]:
        params, test_step = best_params() if t.patience > 0 else (params, None)
        test = scores(nll(params, "test"))
        if test_step is not None:  # the record is written at the last step; these parameters are older
            test["checkpoint_step"] = test_step
        valid_nll = tally.last["valid"]["loss"] if tally.last else float("nan")
        if test_step is not None:  # the tested parameters' own validation score
            valid_nll = math.log(min(tally.history))
        at = "" if test_step is None else f" (the best-validation checkpoint, step {test_step:,})"
        char = corpus.level == "char"
        log(f"valid ppl {ppl_text(perplexity(valid_nll), 3)}" + (f" ({valid_nll / math.log(2):.4f} bpc)" if char else "")
            + f", test ppl {ppl_text(test['perplexity'], 3)}" + (f" ({test['bpt']:.4f} bpc)" if char else "") + at)
        if corpus.floor_ppl is not None:
            log(f"source floor ppl {corpus.floor_ppl:.3f}: valid ppl is "
                f"{100 * (perplexity(valid_nll) / corpus.floor_ppl - 1):.1f}% above it")
        return {"test": test}, {
            "valid_ppl": perplexity(valid_nll),
            "test_ppl": test["perplexity"],
            "best_valid_ppl": min(tally.history) if tally.history else None,
            "valid_loss": valid_nll,
            "test_loss": test["loss"],
            "test_step": test_step,  # the best-validation checkpoint's step with train.patience; None: final
            "corpus": corpus.name,
            "level": corpus.level,  # "char": rnnjax report adds bits per character
            "floor_ppl": corpus.floor_ppl,
            "data": corpus.provenance,  # what was read: files' SHA-256; hub: also the revision and commit
        }

    return loop.Task(
        name="lm", model=lm, objective=steps.lm_objective(lm, config), steps_per_epoch=spe, batch=batch,
        fresh_carry=lambda index: index == 0 or not keep_carry, evaluate=evaluate, finish=finish, best=LM_BEST,
        headline=("test_ppl", "min"), identity={"vocab": corpus.vocab}, tokens_per_step=t.batch_size * t.seq_len,
        describe=f"{corpus.name}: {len(train_ids):,} train tokens, vocab {corpus.vocab_size:,}; "
                 f"{config.model.cell} {lm.sizes}")
