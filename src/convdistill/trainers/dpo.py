"""`train dpo`: DPO on pair records, both model families, a recipe read top to bottom.

    model + tokenizer -> pair records -> fitted, tokenized pairs (counted) -> explicit reference
    -> TRL's DPOTrainer -> train (resumable) -> checkpoint + run_log.json
"""

from __future__ import annotations

import copy
from typing import Any

from convdistill.trainers.loading import load_model, peft_config
from convdistill.trainers.runlog import RunLog
from convdistill.trainers.steps import TrainResult, build_datasets, finish_run, prepare_student, resume_point


def train_dpo(data: Any, model_args: Any, args: Any, callbacks: list[Any] | None = None) -> TrainResult:
    """DPO on pair records. The reference is explicit: a copy of the starting weights, or,
    under LoRA/QLoRA, the same model with its adapter disabled; never reloaded by name."""
    folder, family, tokenizer = prepare_student(data, model_args, args)
    train, evaluation, stats = build_datasets("dpo", data, args, tokenizer, family)
    model = load_model(folder, family, model_args, tokenizer)
    peft = peft_config(model_args, family)
    reference = None
    if peft is None:
        reference = copy.deepcopy(model).eval()
        reference.requires_grad_(False)
    runlog = RunLog(stats)
    trainer = family.dpo_trainer(model=model, ref_model=reference, args=args, train_dataset=train,
                                 eval_dataset=evaluation, processing_class=tokenizer,
                                 peft_config=peft, callbacks=[runlog, *(callbacks or [])])
    trainer.train(resume_from_checkpoint=resume_point(args.resume_from_checkpoint,
                                                       args.output_dir))
    return finish_run(trainer, runlog, tokenizer, folder, model_args, data, args, family,
                      stats, "dpo")
