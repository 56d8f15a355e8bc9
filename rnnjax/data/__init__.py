"""Corpora as token-id arrays, sentence corpora, their files and statistics: the public API."""

from rnnjax.data.cache import TOKEN_CACHE_ENV, resolve_token_cache
from rnnjax.data.corpora import CORPORA, fetch_corpus, load_corpus, load_sentences
from rnnjax.data.corpus import Corpus, Sentences
from rnnjax.data.fetch import DATA_DIR_ENV, resolve_data_dir, resolve_mirror
from rnnjax.data.stats import corpus_stats
from rnnjax.data.text import EOS, SPLITS, UNK, build_vocab, check_vocab

__all__ = ["CORPORA", "DATA_DIR_ENV", "EOS", "SPLITS", "TOKEN_CACHE_ENV", "UNK", "Corpus", "Sentences", "build_vocab",
           "check_vocab", "corpus_stats", "fetch_corpus", "load_corpus", "load_sentences", "resolve_data_dir",
           "resolve_mirror", "resolve_token_cache"]
