"""Stage 2, the units: one unit trains and evaluates one (family, regime, seed); the students
built from the teacher once per family; and the scheduler that runs units in worker processes."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import Future, ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from convdistill.experiments.evaluation import evaluate
from convdistill.experiments.settings import CONVERSATION_REGIMES, Layout, Settings
from convdistill.files import DoneMarker, fingerprint, project_file
from convdistill.progress_log import Log


def recipe(settings: Settings, family: str, regime: str, seed: int, train_file: str, output_dir: Path,
           kd_cache_dir: Path, student: str | None = None,
           teacher: str | None = None) -> tuple[str, dict[str, Any]]:
    """The trainer method and recipe mapping of a unit: the same for every regime but the data
    file (and, for d, e and f, the distillation fields). `student`: the checkpoint a teacher-initialised
    unit starts from (built once in the data stage); `teacher`: the teacher checkpoint of regimes d to f
    when it was corrected (default: `settings.teacher` as it ships)."""
    values: dict[str, Any] = {
        "seed": seed,  # data order: the same across regimes of equal size
        "train_file": train_file,
        "train_on": "all",  # records carry their own `train` flags: exactly one reply each
        "output_dir": str(output_dir),
        "max_steps": settings.max_steps,
        "per_device_train_batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": settings.warmup_steps,
        "max_length": settings.max_length,
        "bf16": False,
        "gradient_checkpointing": False,  # TRL's default is on: recomputation, no memory to save here
        # Batches of similar lengths: a batch is padded to its longest record (one long sample reply
        # among short synthetic ones multiplies the output-layer work of the whole batch).
        "train_sampling_strategy": "group_by_length",
        "logging_steps": max(1, settings.max_steps // 10),
        "save_strategy": "no",
        "report_to": "none",
        "dataloader_pin_memory": False,
        "disable_tqdm": True,
    }
    if settings.students == "tiny":
        values["model_name_or_path"] = f"student:{family}-tiny"
        values["student_seed"] = seed  # a different random student per seed, the same across regimes
    elif family == "smollm2-lora":
        values.update({"model_name_or_path": settings.teacher, "use_peft": True, "lora_r": settings.lora_r,
                       "lora_alpha": 2 * settings.lora_r, "lora_dropout": 0.0,
                       "learning_rate": settings.lora_learning_rate})
    else:
        if student is None:
            raise ValueError(f"unit {family}/{regime}: no teacher-initialised student was built")
        values["model_name_or_path"] = student
    if family == "t5":
        values["max_target_length"] = settings.max_target_length
    if regime not in ("d", *CONVERSATION_REGIMES):
        return "sft", values
    values.update({"teacher": teacher or settings.teacher, "kd_weight": settings.kd_weight,
                   "kd_top_k": settings.kd_top_k, "kd_temperature": settings.kd_temperature,
                   "kd_loss": settings.kd_loss})
    if regime == "d":
        values.update({"kd_cache": settings.kd_cache, "kd_cache_dir": str(kd_cache_dir)})
        return "distill", values
    # e and f: the conversation trainer, batches of whole conversations (written in the step, so
    # nothing to group by length), the teacher live on whatever history the batch has
    del values["train_sampling_strategy"]
    own = regime == "f"
    values.update({"distill_mode": "on_policy_conversation", "kd_self_fraction": 1.0 if own else 0.0,
                   "kd_self_warmup_steps": settings.conversation_warmup_steps if own else 0,
                   "kd_max_new_tokens": settings.conversation_max_new_tokens,
                   "kd_sample_temperature": settings.conversation_sample_temperature,
                   "kd_max_prompt_length": settings.max_length})
    return "distill", values


def build_students(settings: Settings, layout: Layout, threads: int, log: Log) -> dict[str, str]:
    """The teacher-initialised starting points, built once and shared by every unit of a family
    (they are deterministic: the seeds vary the data order)."""
    if settings.students == "tiny":
        return {}
    import torch

    from convdistill.models.from_teacher import init_from_teacher

    torch.set_num_threads(threads)
    llama: dict[str, Any] = {"layers": settings.llama_layers}
    if settings.llama_mlp_channels is not None:
        llama["mlp_channels"] = settings.llama_mlp_channels
    shapes = {"llama": llama,
              "t5": {"layers": settings.t5_decoder_layers, "encoder_layers": settings.t5_encoder_layers,
                     "architecture": settings.t5_architecture}}
    built: dict[str, str] = {}
    for family in settings.families:
        if family not in shapes:
            continue
        # named by shape and by what the build measures (teacher, calibration sample), so that a
        # change of either builds anew instead of reusing a student built from other settings
        source = fingerprint([settings.teacher, settings.export, settings.calibration_conversations])[:8]
        folder = layout.work / "students" / f"{family}-{'-'.join(str(v) for v in shapes[family].values())}-{source}"
        if not (folder / "convdistill.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            info = init_from_teacher(settings.teacher, family, folder, sample=project_file(settings.export),
                                     sample_size=settings.calibration_conversations, **shapes[family])
            log(f"students: {family} from {settings.teacher}, {info.parameters:,} parameters, "
                f"{info.layout()}")
        built[family] = str(folder)
    return built


def describe_students(built: dict[str, str]) -> dict[str, dict[str, Any]]:
    """What each built student is (from its convdistill.json), for the report."""
    out: dict[str, dict[str, Any]] = {}
    for family, folder in built.items():
        record = json.loads((Path(folder) / "convdistill.json").read_text())
        width = record.get("width") or {}
        out[family] = {"parameters": record["parameters"], "architecture": record["architecture"],
                       "layers": record.get("layers"), "encoder_layers": record.get("encoder_layers"),
                       "decoder_layers": record.get("decoder_layers"), "mlp_channels": width.get("mlp_channels")}
    return out


def run_unit(settings: Settings, family: str, regime: str, seed: int, data: dict[str, Any], root: str,
             threads: int, keep_checkpoint: bool = False) -> dict[str, Any]:
    """Train and evaluate one unit; returns (and writes) its metrics. Runs in a worker process."""
    import torch

    from convdistill.trainers import train

    torch.set_num_threads(threads)
    layout = Layout(Path(root))
    name = layout.unit(family, regime, seed)
    work = layout.work / "units" / name
    if work.exists():
        shutil.rmtree(work)  # a unit interrupted earlier starts over
    work.mkdir(parents=True)
    corrected = data.get("corrected_teacher") or {}
    method, values = recipe(settings, family, regime, seed, data["files"][regime], work / "model",
                            layout.work / "kd-cache", data.get("students", {}).get(family),
                            corrected.get("checkpoint"))
    started = time.perf_counter()
    result = train(method, values)
    train_seconds = time.perf_counter() - started
    stats = result.data["train"].as_dict()
    final = [h for h in result.log_history if "train_loss" in h]
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    epochs = final[-1].get("epoch", 0.0) if final else 0.0
    metrics: dict[str, Any] = {
        "unit": name, "family": family, "regime": regime, "seed": seed, "method": method,
        **({"teacher": values["teacher"]} if "teacher" in values else {}),
        "fingerprint": settings.fingerprint(),
        "train": {"seconds": round(train_seconds, 1), "steps": result.global_step, "epochs": round(epochs, 3),
                  "examples": stats["examples"], "truncated": stats["truncated"], "dropped": stats["dropped"],
                  "dataset_trained_tokens": stats["trained_tokens"],
                  # the steps' share of the data times its trained tokens (the sampler shuffles
                  # whole epochs, so this is exact for whole epochs and an estimate for a part)
                  "trained_tokens": round(stats["trained_tokens"] * epochs),
                  "final_loss": losses[-1] if losses else None,
                  "train_loss": final[-1].get("train_loss") if final else None},
    }
    rollouts = result.data.get("rollouts")
    if rollouts is not None:
        # the conversation trainer tokenizes each batch in its step (f: the student's own
        # replies): the tokens its steps trained, counted there, and where the steps' time went
        metrics["train"]["trained_tokens"] = rollouts.trained_tokens
        metrics["train"]["generation"] = result.trainer.generation_report()
    metrics.update(evaluate(result.checkpoint, settings, data["suites"], work, data.get("first_turns")))
    if not keep_checkpoint:
        shutil.rmtree(work / "model", ignore_errors=True)
    unit_marker(layout, settings, name).mark(metrics)
    return metrics


def unit_marker(layout: Layout, settings: Settings, name: str) -> DoneMarker:
    """A unit's metrics file, which marks it done under these settings."""
    return DoneMarker(layout.results / "units" / f"{name}.json", settings.fingerprint(), field="fingerprint")


# Longest units first, so the pool's last minutes go to short ones: SmolLM2 LoRA units took
# 500 s, the Llama student's 390 s and the T5 student's 130 s; regime a (single turns) the least.
_FAMILY_COST = {"smollm2-lora": 0, "llama": 1, "t5": 2}
_REGIME_COST = {"f": 0, "e": 1, "d": 2, "c": 3, "b": 4, "a": 5}


def _unit_order(settings: Settings) -> list[tuple[str, str, int]]:
    """Longest units first; with a teacher-logit cache, the first seed's distillation units
    before everything: each builds its family's cache, which the other seeds then reuse (they
    wait for it rather than build it twice)."""
    units = [(f, r, s) for s in settings.seeds for r in settings.regimes for f in settings.families]
    return sorted(units, key=lambda u: (settings.kd_cache and not (u[1] == "d" and u[2] == settings.seeds[0]),
                                        _FAMILY_COST.get(u[0], 9), _REGIME_COST.get(u[1], 9), u[2]))


def run_units(settings: Settings, layout: Layout, data: dict[str, Any], jobs: int, threads: int,
              keep_checkpoints: bool, log: Log) -> tuple[list[dict[str, Any]], int]:
    """Every unit's metrics (finished ones kept), and how many units this call trained."""
    done: dict[str, dict[str, Any]] = {}
    todo = []
    for family, regime, seed in _unit_order(settings):
        name = layout.unit(family, regime, seed)
        cached = unit_marker(layout, settings, name).done()
        if cached is not None:
            done[name] = cached
        else:
            todo.append((family, regime, seed))
    if done:
        log(f"units: {len(done)} finished earlier with the same settings, kept")
    log(f"units: {len(todo)} to train and evaluate, {jobs} at a time, {threads} torch thread(s) each")
    total = len(done) + len(todo)

    def finished(metrics: dict[str, Any]) -> None:
        done[metrics["unit"]] = metrics
        log(f"unit {metrics['unit']} done ({len(done)}/{total}): "
            f"recall {metrics['recall_seen']['accuracy']:.3f}, real score {metrics['real']['score']:.3f}, "
            f"train {metrics['train']['seconds']:.0f} s, eval {metrics['eval_seconds']:.0f} s")

    work = partial(run_unit, data=data, root=str(layout.root), threads=threads, keep_checkpoint=keep_checkpoints)
    if jobs <= 1:
        for family, regime, seed in todo:
            finished(work(settings, family, regime, seed))
        return [done[layout.unit(*u)] for u in _unit_order(settings)], len(todo)

    import multiprocessing

    # A distillation unit waits until its family's cache is built (by the first seed's unit).
    first_seed = settings.seeds[0]
    builders = {f for f, r, s in todo if r == "d" and s == first_seed} if settings.kd_cache else set()
    waiting = [u for u in todo if u[1] == "d" and u[0] in builders and u[2] != first_seed]
    ready = [u for u in todo if u not in waiting]
    running: dict[Future, tuple[str, str, int]] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while ready or waiting or running:
            while ready and len(running) < jobs:
                unit = ready.pop(0)
                running[pool.submit(work, settings, *unit)] = unit
            future = next(iter(_first_done(running)))
            family, regime, seed = running.pop(future)
            finished(future.result())
            if regime == "d" and seed == first_seed:
                ready += [u for u in waiting if u[0] == family]
                waiting = [u for u in waiting if u[0] != family]
    return [done[layout.unit(*u)] for u in _unit_order(settings)], len(todo)


def _first_done(running: dict[Future, Any]) -> set[Future]:
    from concurrent.futures import FIRST_COMPLETED, wait

    finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
    return finished
