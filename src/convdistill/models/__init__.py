"""Models: the embedded SmolLM2 teacher, tiny T5 / Llama students, chat templates, and the
encoder-decoder prompt format shared by trainers and the server.

    EMBEDDED, model_table, resolve_model   embedded models by name; name or folder -> checkpoint
    prepare_smollm2, prepare_tokenizer     one-time GGUF conversion into CONVDISTILL_HOME
    init_student, build_student            random-initialised students (t5|llama x tiny|small)
    from_teacher.init_from_teacher         students built from a teacher's layers (imports torch)
    STUDENT_TEMPLATE, SMOLLM2_TEMPLATE     ChatML templates with TRL generation markers
    seq2seq_format                         how a conversation feeds an encoder-decoder model
    convdistill_home                       where converted files are cached
"""

from convdistill.models import seq2seq_format
from convdistill.models.chat_templates import SMOLLM2_TEMPLATE, STUDENT_TEMPLATE, chatml_template
from convdistill.models.home import ENV_VAR, convdistill_home
from convdistill.models.registry import EMBEDDED, EmbeddedModel, model_table, resolve_model
from convdistill.models.smollm2 import ModelNotAvailable, prepare_smollm2, prepare_tokenizer
from convdistill.models.students import (
    FAMILIES,
    SIZES,
    SIZES_IN_PARAMS,
    StudentInfo,
    build_student,
    count_parameters,
    init_student,
)

__all__ = [
    "EMBEDDED",
    "ENV_VAR",
    "FAMILIES",
    "SIZES",
    "SIZES_IN_PARAMS",
    "SMOLLM2_TEMPLATE",
    "STUDENT_TEMPLATE",
    "EmbeddedModel",
    "ModelNotAvailable",
    "StudentInfo",
    "build_student",
    "chatml_template",
    "convdistill_home",
    "count_parameters",
    "init_student",
    "model_table",
    "prepare_smollm2",
    "prepare_tokenizer",
    "resolve_model",
    "seq2seq_format",
]
