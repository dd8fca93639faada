"""An option of a job: one key in job files and run.yaml, one --flag on the command line,
checked the same way from either.

The common options (every job has them: tlbprobe/run/job.py ``COMMON_OPTIONS``) and each
workload's own options are records of this one class, so the parser of `tlbprobe
collect` (and of `tlbprobe qemu collect`, which passes them to the guest), the job-file
loader, the job's validation and run.yaml all read the same declaration. This module
knows nothing of jobs or workloads: both sides import it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple, Union

from .errors import InputError

#: A fixed tuple of choices, or a function that lists them when asked (the workload
#: registry's names, which are not known when the record is written).
Choices = Union[Tuple[str, ...], Callable[[], Sequence[str]], None]


@dataclass(frozen=True)
class Option:
    """An option: ``key`` in job files and run.yaml, ``--key-with-dashes`` on the command
    line (``--no-key`` for a negated switch).

    Values: ``kind`` str, int, float or bool; a switch (``flag``) sets True, a negated
    switch (``negate``) sets False; ``parse`` turns a flag's text or a job file's value
    into the value (a size such as '20G', a thread count or 'all'), raising ValueError
    (or InputError) for one it refuses. A value out of ``low..high`` or not among
    ``choices`` is refused with ``message`` when given, a format string with {flag},
    {key}, {value}, {range} and {choices}; ``allowed`` lists values accepted besides
    the range (``threads: all``).
    """

    key: str
    help: str
    kind: type = str                        # str, int, float or bool; a switch: flag=True
    default: Any = None                     # None: the workload's resolve() (or the Job's field) chooses
    flag: bool = False                      # --control: a switch that sets True
    choices: Choices = None
    low: Optional[float] = None
    high: Optional[float] = None
    metavar: Optional[str] = None
    #: --no-trace: a switch that sets False (the option is on unless it is given)
    negate: bool = False
    #: text or job-file value -> value; ValueError (said as "not {expects}") or InputError
    parse: Optional[Callable[[Any], Any]] = None
    #: what a valid value is, for a flag whose ``parse`` refuses it: "a thread count or 'all'"
    expects: str = ""
    #: list the choices in --help ({spin,sleep}) and let argparse refuse others
    show_choices: bool = False
    #: values accepted besides low..high (threads: ALL_OTHERS)
    allowed: Tuple[Any, ...] = ()
    #: the range as the refusal says it, when not low..high
    range_text: Optional[str] = None
    #: the refusal of a value out of range or not among the choices (see the class doc)
    message: Optional[str] = None
    #: the flag's name when it is not the key's ("variant" for the key kernel_variant: one
    #: name per concept across the commands, doc/cli.md); job files keep the key
    name: Optional[str] = None
    #: older spellings of the flag ("--kernel-variant"), accepted and hidden from --help
    #: for a release (doc/cli.md)
    aliases: Tuple[str, ...] = ()

    @property
    def flag_name(self) -> str:
        return ("--no-" if self.negate else "--") + (self.name or self.key).replace("_", "-")

    @property
    def switch(self) -> bool:
        return self.flag or self.negate

    def choice_list(self) -> Tuple[str, ...]:
        if self.choices is None:
            return ()
        return tuple(self.choices() if callable(self.choices) else self.choices)

    # -- checking -------------------------------------------------------------------------
    def coerce(self, value: Any, source: str) -> Any:
        """A job file's or a flag's value, converted and checked: one InputError naming
        what is wrong (``source``: the job file, or "command line")."""
        value = self.convert(value, source)
        self.check(value)
        return value

    def convert(self, value: Any, source: str) -> Any:
        """The value in its kind, or one InputError; None stays None (the default applies)."""
        if value is None:
            return None
        if self.switch or self.kind is bool:
            if not isinstance(value, bool):
                raise self._invalid(source, value, "expected true or false")
            return value
        if self.parse is not None:
            try:
                return self.parse(value)
            except (TypeError, ValueError, OverflowError, InputError) as e:
                raise self._invalid(source, value, str(e)) from None
        if self.kind is int:
            try:
                if isinstance(value, bool) or int(value) != float(value):
                    raise ValueError
                return int(value)
            except (TypeError, ValueError, OverflowError):
                raise self._invalid(source, value, "expected a whole number") from None
        if self.kind is float:
            try:
                return float(value)
            except (TypeError, ValueError) as e:
                raise self._invalid(source, value, str(e)) from None
        return str(value)

    def check(self, value: Any) -> None:
        """Refuse a value out of range or not among the choices (None: not given, fine)."""
        if value is None or value in self.allowed and not isinstance(value, bool):
            return
        if self.kind in (int, float) and not self.switch:
            number = not isinstance(value, bool) and isinstance(value, (int, float) if self.kind is float else int)
            if (not number or (self.low is not None and value < self.low)
                    or (self.high is not None and value > self.high)):
                raise InputError(self._refusal(value, "{flag} {value} is out of range ({range})"))
        choices = self.choice_list()
        if choices and value not in choices:
            raise InputError(self._refusal(value, "{flag} {value!r} is unknown: choose one of {choices}"))

    def _refusal(self, value: Any, default: str) -> str:
        return (self.message or default).format(
            flag=self.flag_name, key=self.key, value=value, choices=", ".join(self.choice_list()),
            range=self.range_text or f"{self.low}..{self.high}")

    def _invalid(self, source: str, value: Any, why: str) -> InputError:
        return InputError(f"{source}: {self.key}: {value!r} is not valid ({why})")

    # -- the command line -----------------------------------------------------------------
    def add_to(self, parser: Any, help: Optional[str] = None) -> None:
        """This option as an argument of ``parser`` (an ArgumentParser or a group of one).
        Its default is None, so that a value the flag did not give comes from the job file
        or the Job."""
        text = self.help if help is None else help
        if self.switch:
            parser.add_argument(self.flag_name, dest=self.key, action="store_const", const=not self.negate,
                                help=text)
            for alias in self.aliases:
                parser.add_argument(alias, dest=self.key, action="store_const", const=not self.negate,
                                    help=argparse.SUPPRESS)
            return
        metavar = self.metavar
        if metavar is None and self.choices is not None and not self.show_choices:
            metavar = "{" + ",".join(self.choice_list()) + "}"  # the choices, not CLIENT_TOUCH
        kw: dict = {"dest": self.key, "metavar": metavar, "help": text}
        if self.parse is not None:
            kw["type"] = self._arg_type()
        elif self.kind in (int, float):
            kw["type"] = self.kind
        else:
            kw["type"] = str
        if self.show_choices:
            kw["choices"] = list(self.choice_list())
        parser.add_argument(self.flag_name, **kw)
        for alias in self.aliases:
            parser.add_argument(alias, **{**kw, "help": argparse.SUPPRESS})

    def _arg_type(self) -> Callable[[str], Any]:
        parse, expects = self.parse, self.expects
        assert parse is not None

        def convert(text: str) -> Any:
            try:
                return parse(text)
            except ValueError:
                if not expects:
                    raise
                raise argparse.ArgumentTypeError(f"{text!r} is not {expects}") from None

        convert.__name__ = getattr(parse, "__name__", self.key)  # argparse names it in "invalid X value"
        return convert
