"""`train sft`: supervised fine-tuning on path records, both model families, a recipe read top to
bottom.

    model + tokenizer -> records -> fitted, tokenized examples (counted) -> TRL trainer
    -> train (resumable) -> checkpoint that serve/eval load as is -> run_log.json
"""

from __future__ import annotations

from typing import Any

from convdistill.trainers.loading import load_model, peft_config
from convdistill.trainers.recipe import set_derived
from convdistill.trainers.runlog import RunLog
from convdistill.trainers.steps import TrainResult, build_datasets, finish_run, prepare_student, resume_point


def train_sft(data: Any, model_args: Any, args: Any, callbacks: list[Any] | None = None) -> TrainResult:
    """Supervised fine-tuning on path records: loss on the selected assistant turns."""
    folder, family, tokenizer = prepare_student(data, model_args, args)
    set_derived(args, "assistant_only_loss", False, "loss masks come from train_on, built when tokenizing")
    train, evaluation, stats = build_datasets("sft", data, args, tokenizer, family)
    model = load_model(folder, family, model_args, tokenizer)
    runlog = RunLog(stats)
    trainer = family.sft_trainer(model=model, args=args, train_dataset=train,
                                 eval_dataset=evaluation, processing_class=tokenizer,
                                 peft_config=peft_config(model_args, family),
                                 callbacks=[runlog, *(callbacks or [])], batch_tokens=data.batch_tokens)
    trainer.train(resume_from_checkpoint=resume_point(args.resume_from_checkpoint,
                                                       args.output_dir))
    return finish_run(trainer, runlog, tokenizer, folder, model_args, data, args, family,
                      stats, "sft")
