"""The failures convdistill expects, and how the command line tells them from bugs.

Three kinds of expected failure, each a one-line message that names the file, line, field or
resource at fault; the CLI prints it and exits 1 (`cli.common.friendly_errors`):

- `BadInput`: a data file the user gave holds something we cannot use (a malformed record, a
  tree without a root, a suite case with no turns);
- `BadRecipe`: settings that cannot run together or name what does not exist (an unknown
  recipe field, a LoRA target the model lacks, a teacher whose vocabulary differs);
- `Unavailable`: something outside the project that is not there right now (an endpoint that
  does not answer, an optional package not installed, a model folder that is missing).

Anything else that reaches the CLI is a bug in convdistill (or in a library under it): it
prints its traceback and a line asking for a report. `BadInput` and `BadRecipe` are also
ValueErrors, so code that catches ValueError around a parse keeps working.
"""

from __future__ import annotations


class ConvdistillError(Exception):
    """An expected failure; its message is meant for the user as it is."""


class BadInput(ConvdistillError, ValueError):
    """A user's data file holds something we cannot use; the message names file and line."""


class BadRecipe(ConvdistillError, ValueError):
    """Settings that cannot run: the message names the field or option and what would work."""


class Unavailable(ConvdistillError, RuntimeError):
    """A resource outside the project (endpoint, package, model, file) is not there."""
