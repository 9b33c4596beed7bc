"""Trainers: multi-turn SFT and DPO for decoder-only and encoder-decoder students, on TRL.

    load_recipe                 YAML + overrides -> (DataConfig, trl.ModelConfig, SFT/DPOConfig)
    train, train_sft, train_dpo run a recipe; the checkpoint loads in serve and eval as is
    tokenize_path, seq2seq_examples, tokenize_pair   records -> token ids and loss masks
    TruncationStats             what the shared truncation policy cut or dropped
    Seq2SeqSFTTrainer, Seq2SeqDPOTrainer   TRL's trainers for encoder-decoder students
"""

from convdistill.trainers.recipe import DataConfig, RecipeError, load_recipe
from convdistill.trainers.run import TrainResult, train, train_dpo, train_sft
from convdistill.trainers.tokenize import seq2seq_examples, tokenize_pair, tokenize_path
from convdistill.trainers.truncation import TruncationStats

__all__ = [
    "DataConfig",
    "RecipeError",
    "TrainResult",
    "TruncationStats",
    "load_recipe",
    "seq2seq_examples",
    "tokenize_pair",
    "tokenize_path",
    "train",
    "train_dpo",
    "train_sft",
]
