"""`distill_mode: on_policy_conversation`: the student writes every one of its turns.

Off-policy distillation trains each reply after the data's reference history; TRL's on-policy
trainers let the student write one reply, still after the reference history. In use, a chat
student reads its *own* earlier replies, and its mistakes compound over turns. Here, for each
training conversation of a batch:

    the data's user turns, in order  ->  the student writes assistant turn 1, then turn 2 after
    its own turn 1, ... (one `generate` call per turn depth, batched across the conversations)
    ->  the teacher scores every written turn on that same history (local, or served through
        /v1/completions echo + log-probabilities)
    ->  per-token divergence (kd_loss) on every written turn; TokenDistillTrainer's loss

A share of the conversations (`kd_self_fraction`, rising over `kd_self_warmup_steps`) is written
by the student; the others keep the data's replies and are distilled off-policy (with
`kd_weight` of cross-entropy there). The student's own tokens take the divergence alone:
cross-entropy on them would teach it to repeat its own samples. Both families: an
encoder-decoder student's replies become part of its encoder input for later turns, through
the same `seq2seq_format` that training and serving share.

The share of each step spent generating is logged (`generate_share`) and totalled in
run_log.json. Checkpoints, resuming and logging are the Trainer's; which conversations the
student writes is drawn from (seed, step, conversation), so a resumed run draws the same.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from convdistill.errors import BadInput
from convdistill.trainers.data import train_flags
from convdistill.trainers.distill import served_teacher, shared_vocabulary
from convdistill.trainers.distill_trainer import TokenDistillTrainer
from convdistill.trainers.family import ModelFamily
from convdistill.trainers.kd_config import ConversationDistillConfig
from convdistill.trainers.loading import load_model, peft_config
from convdistill.trainers.on_policy import record_datasets
from convdistill.trainers.recipe import set_derived
from convdistill.trainers.rollout import Sampling
from convdistill.trainers.runlog import RunLog
from convdistill.trainers.served_teacher import ServedTeacher, check_tokenizer, score_jobs_served
from convdistill.trainers.steps import TrainResult, finish_run, prepare_student, resume_point
from convdistill.trainers.teacher_model import load_teacher, teacher_folder
from convdistill.trainers.teacher_scoring import plan_jobs, score_jobs
from convdistill.trainers.truncation import TruncationStats, keep_latest_turns

Message = dict[str, str]


# -- the data: whole conversations ------------------------------------------------------------


def conversation_rows(records: list[dict[str, Any]], train_on: str, stats: TruncationStats) -> list[dict[str, Any]]:
    """One row per path record: its messages up to the last trained turn, which assistant turns
    the student writes (each one after a user turn) and which of those carry loss (train_on)."""
    rows: list[dict[str, Any]] = []
    for record in records:
        stats.records += 1
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
        flags = train_flags(record, train_on)
        writes = [i for i, m in enumerate(messages)
                  if m["role"] == "assistant" and i > 0 and messages[i - 1]["role"] == "user"]
        trained = [i for i in writes if flags[i]]
        if not trained:
            stats.drop("no trained assistant turn after a user turn")
            continue
        end = trained[-1] + 1  # later turns carry no loss: the student need not write them
        stats.examples += len(trained)
        rows.append({"messages": messages[:end], "student_turns": [i for i in writes if i < end],
                     "flags": [i in trained for i in range(end)], "conversation": len(rows)})
    return rows


def self_share(step: int, fraction: float, warmup_steps: int) -> float:
    """The share of conversations the student writes at `step`: rising linearly from 0 over the
    warm-up (from gold to self history), then `fraction`."""
    return fraction if warmup_steps <= 0 else fraction * min(1.0, step / warmup_steps)


def writes_itself(seed: int, step: int, conversation: int, share: float) -> bool:
    """Whether the student writes this conversation at this step: a draw fixed by (seed, step,
    conversation), so a resumed run makes the same choices."""
    return random.Random(f"{seed}:{step}:{conversation}").random() < share


# -- the student writes its turns ---------------------------------------------------------------


@dataclass
class Rollout:
    """One conversation as trained: the data's user turns and, where `self_written`, the
    student's own replies in place of the references; `prompts[i]`: the token ids the student
    read before writing message i."""

    conversation: int
    messages: list[Message]
    flags: list[bool]
    self_written: bool
    prompts: dict[int, list[int]] = field(default_factory=dict)


def fit_prompt(family: ModelFamily, history: Sequence[Message], tokenizer: Any, max_tokens: int,
               stats: TruncationStats) -> list[int]:
    """The student's prompt for the reply to `history`, oldest turns dropped first to fit
    `max_tokens` (the shared truncation policy), then the oldest tokens if one exchange is too long."""
    ids = family.prompt_ids(history, tokenizer)
    if len(ids) <= max_tokens:
        return ids
    kept, dropped, ok = keep_latest_turns(history, lambda c: len(family.prompt_ids(c, tokenizer)) <= max_tokens)
    stats.turns_dropped += dropped
    stats.context_cut += not ok
    return family.prompt_ids(kept, tokenizer)[-max_tokens:]


def roll_out(model: Any, family: ModelFamily, tokenizer: Any, rows: Sequence[dict[str, Any]], own: Sequence[bool],
             sampling: Sampling, max_prompt_tokens: int, stats: TruncationStats) -> list[Rollout]:
    """Every self-written conversation's assistant turns, in order: at depth d, the d-th turn of
    every conversation that has one is written in one batch, after the data's user turns and the
    student's own replies to the turns before it."""
    rollouts = [Rollout(int(row["conversation"]), [dict(m) for m in row["messages"]], list(row["flags"]), mine)
                for row, mine in zip(rows, own, strict=True)]
    turns = [list(row["student_turns"]) if mine else [] for row, mine in zip(rows, own, strict=True)]
    eos_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    depth = 0
    while due := [(r, t[depth]) for r, t in zip(rollouts, turns, strict=True) if depth < len(t)]:
        prompts = [fit_prompt(family, r.messages[:i], tokenizer, max_prompt_tokens, stats) for r, i in due]
        replies = family.generate(model, prompts, tokenizer.pad_token_id, eos_id, sampling)
        for (rollout, index), prompt, reply in zip(due, prompts, replies, strict=True):
            rollout.prompts[index] = prompt
            rollout.messages[index] = {"role": "assistant",
                                       "content": tokenizer.decode(reply, skip_special_tokens=True)}
        depth += 1
    return rollouts


# -- the trainer ------------------------------------------------------------------------------


def pass_conversations(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The data collator: conversations go to the training step as they are (the student writes
    them there, with the model of that step)."""
    return {"conversations": rows}


class ConversationDistillTrainer(TokenDistillTrainer):
    """TokenDistillTrainer over conversations the student writes in the training step itself.
    `args`: a kd_config.ConversationDistillConfig. `teacher`: the local teacher model, or None
    with `served`, a teacher behind an endpoint. `rollout_stats` counts what fitting the written
    conversations cost."""

    def __init__(self, model: Any, args: Any, train_dataset: Any, processing_class: Any, *, family: ModelFamily,
                 teacher: Any, served: ServedTeacher | None, vocab_size: int, max_target_length: int | None,
                 rollout_stats: TruncationStats, **kwargs: Any) -> None:
        if teacher is None and served is None:
            raise ValueError("on-policy conversation distillation needs a local or a served teacher")
        student_collator = family.collator(processing_class.pad_token_id, model)  # before PEFT wraps the model
        super().__init__(model=model, args=args, train_dataset=train_dataset, processing_class=processing_class,
                         family=family, cache=None, teacher=teacher, teacher_pad_id=processing_class.pad_token_id,
                         vocab_size=vocab_size, data_collator=pass_conversations, **kwargs)
        self.student_collator = student_collator
        self.served = served
        self.max_target_length = max_target_length
        self.conversation: ConversationDistillConfig = args  # self.args, typed with this mode's fields
        self.sampling = Sampling(args.kd_max_new_tokens, args.kd_sample_temperature, args.kd_sample_top_p)
        self.rollout_stats = rollout_stats
        self.seconds = {"generate": 0.0, "teacher": 0.0, "step": 0.0}  # this process's totals
        self.steps_run = 0  # training steps this process ran (a resumed run starts from its checkpoint)
        self.last_rollouts: list[Rollout] = []  # the latest batch, for inspection (tests, debugging)
        self.last_examples: list[dict[str, list[int]]] = []
        self._own_tokens: torch.Tensor | None = None

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["messages", "student_turns", "flags", "conversation"]  # type: ignore[assignment]

    def score(self, examples: Sequence[dict[str, list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's top-k (ids, log-probabilities) at every labelled token of `examples`, in
        order; nested prefixes (an encoder-decoder conversation's turns) are scored once."""
        jobs = plan_jobs([self.family.teacher_view(e) for e in examples])
        if self.served is not None:
            scored = score_jobs_served(self.served, jobs, self.kd.kd_top_k, self.kd.teacher_batch_tokens)
        else:
            scored = score_jobs(self.teacher, jobs, self.kd.kd_top_k, self.kd.kd_temperature,
                                self.processing_class.pad_token_id, self.vocab_size,  # type: ignore[union-attr]
                                self.kd.teacher_batch_tokens)
        return (torch.cat([scored[i][0] for i in range(len(examples))]),
                torch.cat([scored[i][1] for i in range(len(examples))]))

    def conversation_batch(self, model: Any, rows: list[dict[str, Any]], share: float, mode: str
                           ) -> dict[str, torch.Tensor]:
        """The student writes its share of `rows`; the written and the gold conversations are
        tokenized and fitted as off-policy data is, scored by the teacher and collated. `mode`:
        train or eval, where the metrics go (the Trainer sets the model's mode only after this)."""
        own = [writes_itself(self.args.seed, self.state.global_step, int(row["conversation"]), share) for row in rows]
        tokenizer = self.processing_class
        started = time.perf_counter()
        rollouts = roll_out(self.accelerator.unwrap_model(model), self.family, tokenizer, rows, own, self.sampling,
                            self.kd.kd_max_prompt_length, self.rollout_stats)
        generated = time.perf_counter()
        examples: list[dict[str, list[int]]] = []
        own_tokens: list[bool] = []
        for rollout in rollouts:
            for example in self.family.sft_examples(rollout.messages, rollout.flags, tokenizer, self.kd.max_length,
                                                    self.max_target_length, self.rollout_stats):
                examples.append(example)
                own_tokens += [rollout.self_written] * len(self.family.teacher_view(example).positions)
        if not examples:
            raise BadInput(f"no conversation of a batch is left once fitted to max_length {self.kd.max_length} "
                           f"({self.rollout_stats.summary()})")
        top_ids, top_log_probs = self.score(examples)
        scored = time.perf_counter()
        batch = self.student_collator(examples)
        batch.update(teacher_top_ids=top_ids, teacher_top_log_probs=top_log_probs,
                     kd_self_tokens=torch.tensor(own_tokens, dtype=torch.bool))
        self.last_rollouts, self.last_examples = rollouts, examples
        if mode == "train":
            self.seconds["generate"] += generated - started
            self.seconds["teacher"] += scored - generated
        metrics = self._metrics[mode]
        metrics["generate_seconds"].append(generated - started)
        metrics["teacher_seconds"].append(scored - generated)
        metrics["self_written"].append(sum(own) / len(own))
        metrics["student_turns"].append(sum(len(r.prompts) for r in rollouts))
        return batch

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        started = time.perf_counter()
        share = self_share(self.state.global_step, self.conversation.kd_self_fraction,
                           self.conversation.kd_self_warmup_steps)
        generate_before = self.seconds["generate"]
        batch = self.conversation_batch(model, inputs["conversations"], share, "train")
        loss = super().training_step(model, batch, num_items_in_batch)
        step = time.perf_counter() - started
        self.seconds["step"] += step
        self.steps_run += 1
        self._metrics["train"]["step_seconds"].append(step)
        self._metrics["train"]["generate_share"].append((self.seconds["generate"] - generate_before) / step)
        return loss

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> Any:
        # held out: the student writes every conversation, so eval_loss is the divergence on its own history
        batch = self.conversation_batch(model, inputs["conversations"], 1.0, "eval")
        return super().prediction_step(model, batch, True, ignore_keys)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        self._own_tokens = inputs.pop("kd_self_tokens")
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def mix(self, kd: torch.Tensor, ce: torch.Tensor) -> torch.Tensor:
        """The student's own tokens: the divergence alone; the data's tokens: kd_weight's mix."""
        assert self._own_tokens is not None, "compute_loss sets the batch's token marks"
        own = self._own_tokens.to(kd.device)
        weight = self.kd.kd_weight
        return torch.where(own, kd, weight * kd + (1 - weight) * ce).sum()

    def generation_report(self) -> dict[str, Any]:
        """Seconds spent generating, scoring with the teacher and in whole steps, over this process's run."""
        step = self.seconds["step"]
        return {"steps": self.steps_run, "generate_seconds": round(self.seconds["generate"], 2),
                "teacher_seconds": round(self.seconds["teacher"], 2), "step_seconds": round(step, 2),
                "generate_share": round(self.seconds["generate"] / step, 4) if step else None}


# -- the recipe -------------------------------------------------------------------------------


def train_conversation_policy(data: Any, model_args: Any, args: Any, callbacks: list[Any] | None = None
                              ) -> TrainResult:
    """Whole-conversation on-policy distillation of either family. `args`: a
    kd_config.ConversationDistillConfig."""
    served = served_teacher(args)
    teacher = served or teacher_folder(args.teacher)
    folder, family, tokenizer = prepare_student(data, model_args, args)
    set_derived(args, "assistant_only_loss", False, "loss masks come from train_on, built when tokenizing")
    set_derived(args, "train_sampling_strategy", "random",
                "conversations are written in the training step: no lengths to group by beforehand")
    model = load_model(folder, family, model_args, tokenizer)
    vocab_size = shared_vocabulary(teacher, tokenizer, model, model_args.model_name_or_path)
    datasets, stats = record_datasets(data, args, lambda records, counts: conversation_rows(
        records, data.train_on, counts))
    if served is not None:  # the ids sent must mean the same text to the endpoint's tokenizer
        check_tokenizer(served, tokenizer, [tokenizer.apply_chat_template(row["messages"], tokenize=False)
                                            for row in datasets["train"].select(range(min(8, len(datasets["train"]))))])
    stats["rollouts"] = TruncationStats()
    runlog = RunLog(stats)
    trainer = ConversationDistillTrainer(
        model=model, args=args, train_dataset=datasets["train"], eval_dataset=datasets.get("eval"),
        processing_class=tokenizer, peft_config=peft_config(model_args, family),
        callbacks=[runlog, *(callbacks or [])], family=family,
        teacher=None if isinstance(teacher, ServedTeacher) else load_teacher(teacher),
        served=served, vocab_size=vocab_size, max_target_length=data.max_target_length,
        rollout_stats=stats["rollouts"])
    trainer.train(resume_from_checkpoint=resume_point(args.resume_from_checkpoint, args.output_dir))
    report = trainer.generation_report()
    print(f"[convdistill] on-policy conversations: {report['generate_seconds']} s generating of "
          f"{report['step_seconds']} s in training steps (share {report['generate_share']})", file=sys.stderr,
          flush=True)
    extra = {"teacher": served.name if served else str(teacher), "distill_mode": "on_policy_conversation",
             "kd_loss": args.kd_loss, "kd_weight": args.kd_weight, "kd_temperature": args.kd_temperature,
             "kd_top_k": args.kd_top_k, "kd_self_fraction": args.kd_self_fraction,
             "kd_self_warmup_steps": args.kd_self_warmup_steps, "kd_max_new_tokens": args.kd_max_new_tokens,
             "generation": report}
    return finish_run(trainer, runlog, tokenizer, folder, model_args, data, args, family, stats, "distill", extra)
