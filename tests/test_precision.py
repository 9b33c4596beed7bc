"""Precision: which CPUs get bf16 (read from a real cpuinfo file), what `auto` resolves to, and
how a recipe's precision sets TRL's fields. The bf16 runs themselves are in test_trainers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from convdistill.errors import BadRecipe
from convdistill.precision import cpu_bf16_units, cpu_flags, resolve_precision
from convdistill.trainers import load_recipe
from convdistill.trainers.recipe import RecipeError

# Excerpts of /proc/cpuinfo as Linux writes it: a Sapphire Rapids core (AMX), a Cooper Lake one
# (AVX512-BF16 only), a Zen 2 one (neither), and an Arm core (its flags line is "Features").
SAPPHIRE_RAPIDS = ("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme sse2 avx2 avx512f avx512_bf16 "
                   "amx_bf16 amx_tile amx_int8\nbogomips\t: 4200.00\n")
COOPER_LAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16\n"
ZEN2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n"
NEOVERSE = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics bf16 i8mm\n"


@pytest.mark.parametrize(("cpuinfo", "units"), [(SAPPHIRE_RAPIDS, "amx_bf16"), (COOPER_LAKE, "avx512_bf16"),
                                                 (ZEN2, None), (NEOVERSE, None), ("", None)])
def test_bf16_units_are_read_from_cpuinfo(tmp_path: Path, cpuinfo: str, units: str | None) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    assert cpu_bf16_units(cpu_flags(path)) == units
    assert cpu_flags(tmp_path / "missing") == set()  # not Linux: no flags, fp32


def test_auto_picks_bf16_only_where_the_cpu_has_bf16_units(tmp_path: Path) -> None:
    amx = resolve_precision("auto", flags={"avx2", "amx_bf16"}, gpu=False)
    assert (amx.name, amx.device, amx.bf16) == ("bf16", "cpu", True) and "amx_bf16" in amx.reason
    plain = resolve_precision("auto", flags={"avx2"}, gpu=False)
    assert (plain.name, plain.bf16) == ("fp32", False) and "no bf16 units" in plain.reason
    assert resolve_precision("bf16", flags=set(), gpu=False).bf16  # asked for: emulated, but honoured
    assert not resolve_precision("fp32", flags={"amx_bf16"}, gpu=False).bf16
    with pytest.raises(BadRecipe, match="'half': choose auto, bf16, fp32"):
        resolve_precision("half")


def test_recipe_precision_sets_trls_fields(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from convdistill import precision

    monkeypatch.setattr(precision, "_announced", set())  # said once per process: maybe already, by another test
    base = {"model_name_or_path": "student:llama-tiny", "train_file": "x.jsonl", "output_dir": "unused",
            "report_to": "none"}
    _, _, auto = load_recipe("sft", base)
    here = resolve_precision("auto")
    assert auto.bf16 == here.bf16  # this machine's own choice
    assert f"precision: training in {here.name} on cpu" in capsys.readouterr().err
    _, _, forced = load_recipe("sft", {**base, "precision": "bf16"})
    assert forced.bf16 and forced.use_cpu  # transformers wants use_cpu for bf16 on a CPU
    _, _, fp32 = load_recipe("sft", {**base, "precision": "fp32"})
    assert not fp32.bf16
    _, _, trl_field = load_recipe("sft", {**base, "bf16": False})  # TRL's own field wins
    assert not trl_field.bf16
    with pytest.raises(RecipeError, match="either precision or TRL's bf16"):
        load_recipe("sft", {**base, "precision": "bf16", "bf16": False})
    with pytest.raises(RecipeError, match="precision"):
        load_recipe("sft", {**base, "precision": "fp16"})
