"""The teacher: extends trees with teacher-written turns through any OpenAI-compatible endpoint.

Trees in, trees out: new messages are nodes of the same trees (``synthetic: true``,
``model_name: <teacher>``, ``created_date``), written in the input's export format.

    run_teacher, teacher_endpoint     a whole run over a file (extend | regenerate | rank)
    TeacherSettings, RunOptions       what to do, and how
    EndpointSettings, Budget          where to send requests, and how many
    TeacherClient, RequestCache       cached, bounded, retried requests
"""

from convdistill.teacher.client import Budget, EndpointSettings, TeacherClient
from convdistill.teacher.operations import TeacherSettings
from convdistill.teacher.request_cache import RequestCache
from convdistill.teacher.run import RunOptions, RunReport, run_teacher, teacher_endpoint

__all__ = [
    "Budget",
    "EndpointSettings",
    "RequestCache",
    "RunOptions",
    "RunReport",
    "TeacherClient",
    "TeacherSettings",
    "run_teacher",
    "teacher_endpoint",
]
