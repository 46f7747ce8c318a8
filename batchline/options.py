"""A job's options: what a job is submitted with besides its requests, defined once.

`batchline.submit_job` accepts these keywords (besides `requests`, `source`, `upload` and
`job_id`), the client's submit passes them on, `batchline submit` offers them (each field
names its command-line parameters), and the README's message contract lists them; tests keep
all of these equal to this model. The workers' own defaults (BATCHLINE_DEFAULT_MODEL,
BATCHLINE_DEFAULT_MAX_TOKENS, BATCHLINE_MAX_ATTEMPTS) are applied once, by the pipeline's
submit (`resolved`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from batchline.wire import dumps, loads

if TYPE_CHECKING:
    from batchline.settings import Settings

# How a field counts in the job's fingerprint (the same content and options are one job):
ALWAYS = "always"
WHEN_SET = "when_set"  # added later: only when set, so a job stored before keeps its print
F = TypeVar("F", bound=Callable[..., Any])


def _meta(fingerprint: str | None = None, cli: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JobOptions field's place in the fingerprint, and the `batchline submit` parameters
    that set it (none: not offered on the command line)."""
    return {"fingerprint": fingerprint, "cli": cli}


@dataclass
class JobOptions:
    """What a job was submitted with, besides its requests (immutable after submit)."""

    defaults: dict[str, Any] = field(
        default_factory=dict, metadata=_meta(ALWAYS, ("model", "max_tokens", "system"))
    )
    on_result: str | None = field(default=None, metadata=_meta(ALWAYS, ("on_result",)))
    on_complete: str | None = field(default=None, metadata=_meta(ALWAYS, ("on_complete",)))
    hook_queue: str | None = field(default=None, metadata=_meta(None, ("hook_queue",)))
    # Not given (None): the workers' BATCHLINE_MAX_ATTEMPTS, filled in by `resolved`; a
    # stored job's options always hold a number.
    max_attempts: int = field(default=cast(int, None), metadata=_meta(ALWAYS, ("max_attempts",)))
    metadata: Any = field(default=None, metadata=_meta(ALWAYS, ("metadata",)))
    accept_invalid: bool = field(default=False, metadata=_meta(ALWAYS, ("accept_invalid",)))
    webhook_url: str | None = field(default=None, metadata=_meta(None, ("webhook_url",)))
    result_events: bool = field(default=False, metadata=_meta())
    max_cost_usd: float | None = field(default=None, metadata=_meta(ALWAYS, ("max_cost_usd",)))
    cache: bool = field(default=False, metadata=_meta(ALWAYS, ("cache",)))
    cache_scope: str = field(default="global", metadata=_meta(ALWAYS))
    # The input's form and how its rows become requests (see batchline.formats, RowSpec in
    # batchline.validation): None is JSONL of requests, or the source's extension.
    format: str | None = field(default=None, metadata=_meta(WHEN_SET, ("input_format",)))
    template: str | None = field(
        default=None, metadata=_meta(WHEN_SET, ("template", "template_file"))
    )
    system_template: str | None = field(default=None, metadata=_meta(WHEN_SET, ("system",)))
    id_column: str | None = field(default=None, metadata=_meta(WHEN_SET, ("id_column",)))
    # An in-process handler (batchline.handlers): "package.module:function", called on the
    # results worker once per request; None is the workers' BATCHLINE_RESULT_HANDLER.
    handler: str | None = field(default=None, metadata=_meta(WHEN_SET, ("handler",)))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def given_defaults(cls) -> dict[str, Any]:
        """What each option is when it is not given."""
        return _defaults()

    @classmethod
    def given(cls, task: str, options: Mapping[str, Any]) -> JobOptions:
        """The options as sent to `task`; an unknown keyword is refused as Python refuses
        one (TypeError naming it)."""
        known = set(cls.names())
        for name in options:
            if name not in known:
                raise TypeError(f"{task}() got an unexpected keyword argument {name!r}")
        return cls(**options)

    def resolved(self, settings: Settings) -> JobOptions:
        """Checked, with the workers' own defaults applied: what the job is stored with.
        Refuses (JobRefused) an unknown format, an unusable template, a webhook URL that
        may not be called, a handler that cannot be imported, or unknown fields in
        defaults."""
        from batchline.formats import detect_format
        from batchline.handlers import check_handler
        from batchline.validation import RowSpec, check_defaults
        from batchline.webhooks.endpoints import check_job_webhook

        if self.format is not None:
            detect_format(None, self.format)  # refused now when unknown
        RowSpec.build(self.template, self.system_template, self.id_column)
        if self.webhook_url is not None:
            check_job_webhook(self.webhook_url, settings)
        if self.handler is not None:
            check_handler(self.handler)
        base: dict[str, Any] = {}
        if settings.default_model:
            base["model"] = settings.default_model
        if settings.default_max_tokens:
            base["max_tokens"] = settings.default_max_tokens
        attempts: int | None = self.max_attempts
        return dataclasses.replace(
            self,
            defaults={**base, **check_defaults(self.defaults)},
            max_attempts=attempts if attempts is not None else settings.max_attempts,
        )

    def canonical(self) -> bytes:
        """The options that define the job's content, for its fingerprint."""
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            how = f.metadata["fingerprint"]
            if how == ALWAYS or (how == WHEN_SET and value is not None):
                fields[f.name] = value
        return dumps(fields)

    @property
    def table(self) -> bool:
        """True when the input is a table whose rows are kept for a results table (a template
        over rows, or a CSV, TSV or Parquet input)."""
        return self.template is not None or self.format in ("csv", "tsv", "parquet")

    def to_json(self) -> bytes:
        return dumps(self.__dict__)

    @classmethod
    def from_json(cls, data: bytes | str) -> JobOptions:
        return cls(**loads(data))


def _defaults() -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(JobOptions):
        factory = f.default_factory
        out[f.name] = factory() if factory is not dataclasses.MISSING else f.default
    return out


# JobOptions fields added after jobs were first stored: in the fingerprint (and in a job id
# the client derives) only when set.
ADDED_LATER = tuple(
    f.name for f in dataclasses.fields(JobOptions) if f.metadata["fingerprint"] == WHEN_SET
)
# Those about the input's form.
TABLE_OPTIONS = tuple(name for name in ADDED_LATER if name != "handler")


def with_options(fn: F, extras: tuple[str, ...] = ()) -> F:
    """Give `fn` (whose options arrive as **options) a signature naming every option: what
    inspect and help() show. `extras` are keywords it takes besides the options (job_id)."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    keyword_only = any(p.kind is p.KEYWORD_ONLY for p in params)
    kind = (
        inspect.Parameter.KEYWORD_ONLY if keyword_only else inspect.Parameter.POSITIONAL_OR_KEYWORD
    )
    for name in extras:
        params.append(inspect.Parameter(name, kind, default=None, annotation="str | None"))
    for name, default in _defaults().items():
        # A dict default (defaults) is given as None: no mutable default in a signature.
        shown = None if isinstance(default, dict) else default
        params.append(inspect.Parameter(name, kind, default=shown, annotation=_types()[name]))
    fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return fn


def _types() -> dict[str, Any]:
    """Each option's type as given: one whose default is None may be left out (None)."""
    types = {}
    for f in dataclasses.fields(JobOptions):
        shown = str(f.type)
        if f.default is None and "None" not in shown and shown != "Any":
            shown += " | None"
        types[f.name] = shown
    return types
