"""The one exception type the CLI turns into a one-line message (no traceback)."""


class AlignlabError(Exception):
    """A user-facing error. The message is one line and names the fix."""


class ArchitectureError(AlignlabError):
    """The model's structure cannot be mapped (unknown or partly matched architecture)."""


class TemplateError(AlignlabError):
    """The chat template is missing or rewrites user content."""


class DataError(AlignlabError):
    """A prompt/text/activation file is empty, malformed or wrongly encoded."""
