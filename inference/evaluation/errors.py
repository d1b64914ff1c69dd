"""The harness's one error type for bad input (every script prints it as one ``error:`` line)."""


class EvalConfigError(ValueError):
    """Bad harness input found before any generation (template, vocabularies, paths, settings)."""
