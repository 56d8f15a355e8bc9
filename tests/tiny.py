"""The one tiny language-model run the subprocess tests build on: 24 steps per epoch on the
synthetic corpus, a few seconds per run. A test module adds or changes keys with `{**LM, ...}`."""

LM = {
    "data.synthetic_train_tokens": 2000, "data.synthetic_eval_tokens": 500,
    "model.num_layers": 1, "model.hidden_size": 16, "model.embed_size": 8,
    "train.batch_size": 8, "train.seq_len": 10, "train.log_every": 1, "eval.batch_size": 4, "eval.seq_len": 50,
}
