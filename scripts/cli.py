"""The command line as users meet it: invoke's parser, with a suggestion for a mistyped task or
option, one sentence for a value of the wrong kind or a missing argument, exit code 2 for
every usage error (1 stays for failures), the task list for a bare `inv`, and the arguments
after `--` exactly as they were typed.

invoke has no hook for its parse errors (it prints them and exits 1), and an option value of
the wrong type leaves its parser as a ValueError traceback. `install` wraps the places where
they arise: Program.parse_tasks and parse_cleanup, Argument.set_value, and no_tasks_given.
tests/unit/test_unit_cli.py runs `inv` on every case, so an invoke upgrade that changes
them fails there (invoke is pinned in pyproject.toml).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts.console import closest

if TYPE_CHECKING:
    from invoke.collection import Collection
    from invoke.parser.context import ParserContext
    from invoke.program import Program

USAGE = 2  # the exit code of a usage error, as argparse and most Unix tools use
_KINDS = {int: "a whole number", float: "a number"}
# invoke's parse errors (invoke/parser/parser.py), as this module reads them.
_MISSING = r"'(.*)' did not receive required positional arguments: (.*)"
_NEEDS_VALUE = r"Flag <Argument: ([^ >]+).*> needed value and was not given one!"


def remainder(argv: Sequence[str] | None = None) -> list[str]:
    """The arguments after the first `--`, one by one as the shell passed them (invoke's own
    `remainder` joins them with spaces, which loses their quoting)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return args[args.index("--") + 1 :] if "--" in args else []


# Words that look like options but are values of a task's positional argument (invoke has no
# optional positional argument: `inv db.restore --latest` passes "--latest" as FILE).
_VALUE_WORDS: dict[str, set[str]] = {}


# Tasks whose positional argument may be left out: `inv db.snapshot` takes a name or none.
# invoke requires every positional argument, so an empty one is put in where none was typed.
_OPTIONAL_POSITIONAL: set[str] = set()


# What Tab offers for an option's value, or for a task's positional argument ("").
def _backup_names() -> list[str]:
    from scripts.errors import StackError
    from scripts.ops.backup_files import list_backups
    from scripts.settings import load

    try:
        return [info.path.name for info in list_backups(load(), check=False)]
    except (StackError, OSError):  # no env file yet, a bad one: no names to offer
        return []


def _services() -> list[str]:
    from scripts.backends.base import SERVICES

    return list(SERVICES)


_VALUES: dict[tuple[str, str], Callable[[], Iterable[str]]] = {
    ("db.restore", ""): lambda: [*_backup_names(), "--latest"],
    ("logs", "--services"): _services,
    ("db.backup", "--format"): lambda: ["custom", "sql", "directory"],
    ("env", "--format"): lambda: ["dotenv", "shell", "json"],
}


def install(
    value_words: dict[str, set[str]] | None = None, optional_positional: Iterable[str] = ()
) -> None:
    """Make invoke's Program and Argument give the errors above, and Tab complete values.
    Idempotent."""
    import invoke.program

    _VALUE_WORDS.update(value_words or {})
    _OPTIONAL_POSITIONAL.update(optional_positional)
    if getattr(invoke.program, "_values_completed", False):
        return
    invoke.program._values_completed = True  # type: ignore[attr-defined]
    invoke.program.complete = _completing(invoke.program.complete)  # type: ignore[attr-defined]
    from invoke.parser.argument import Argument
    from invoke.program import Program

    if getattr(Program, "_usage_errors_installed", False):
        return
    Program._usage_errors_installed = True  # type: ignore[attr-defined]
    Program.parse_tasks = _guarded(Program.parse_tasks, check_values=True)  # type: ignore[method-assign,assignment]
    Program.parse_cleanup = _guarded(Program.parse_cleanup, check_values=False)  # type: ignore[method-assign,assignment]
    Program.no_tasks_given = _list_tasks  # type: ignore[method-assign]
    original_set_value = Argument.set_value

    def set_value(self: Argument, value: Any, cast: bool = True) -> None:
        try:
            original_set_value(self, value, cast)
        except (TypeError, ValueError):
            kind = _KINDS.get(self.kind, self.kind.__name__)
            raise _ValueError(self.name or "", f"takes {kind}, not {value!r}") from None

    Argument.set_value = set_value  # type: ignore[method-assign]


class _ValueError(ValueError):
    def __init__(self, flag: str, problem: str) -> None:
        super().__init__(problem)
        self.flag = flag.replace("_", "-")
        self.problem = problem


def _guarded(method: Callable[[Program], None], *, check_values: bool) -> Callable[[Program], None]:
    def wrapper(self: Program) -> None:
        from invoke.exceptions import Exit, ParseError

        try:
            if check_values:
                self.core.unparsed = fill_optional_positionals(self.core.unparsed, self.collection)
            method(self)
            if check_values:
                _refuse_flags_as_values(self)
        except ParseError as exc:
            raise Exit(f"✘ {_explain(self, str(exc), exc.context)}", code=USAGE) from None
        except _ValueError as exc:
            task = _task_with_flag(self, exc.flag)
            where = f" (`inv --help {task}`)" if task else ""
            raise Exit(f"✘ --{exc.flag} {exc.problem}{where}.", code=USAGE) from None

    return wrapper


def fill_optional_positionals(tokens: Sequence[str], collection: Collection) -> list[str]:
    """`tokens` with an empty value after each task of _OPTIONAL_POSITIONAL that got no bare
    word (neither an option nor an option's value). As invoke does for a required positional
    argument, the first bare word is the value even when it names a task too
    (`inv db.snapshot init`)."""
    tokens = list(tokens)
    index = 0
    while index < len(tokens):
        name = tokens[index]
        index += 1
        if name not in _OPTIONAL_POSITIONAL:
            continue
        import copy

        task = copy.deepcopy(collection[name])  # get_arguments() uses up the task's help
        valued = {
            f"-{n}" if len(n) == 1 else f"--{n.replace('_', '-')}"
            for arg in task.get_arguments()
            if arg.kind is not bool
            for n in arg.names
        }
        end = index
        while end < len(tokens) and tokens[end] != "--":
            word = tokens[end]
            if not word.startswith("-") or word in _VALUE_WORDS.get(name, set()):
                break  # the value
            end += 2 if word in valued else 1
        else:
            tokens.insert(index, "")
    return tokens


def _completing(original: Callable[..., Any]) -> Callable[..., Any]:
    """invoke's --complete, which offers tasks and option names, plus the values of options
    and of db.restore's FILE (backup names), which it leaves to the shell's file names."""

    def complete(
        names: list[str],
        core: Any,
        initial_context: Any,
        collection: Any,
        parser: Any,
    ) -> Any:
        import shlex

        from invoke.exceptions import Exit

        invocation = re.sub(r"^({}) ".format("|".join(map(re.escape, names))), "", core.remainder)
        try:
            tokens = shlex.split(invocation)
        except ValueError:  # an open quote
            tokens = invocation.split()
        values = _values_for(tokens, parser)
        if values is None:
            return original(names, core, initial_context, collection, parser)
        for value in values:
            print(value)
        raise Exit

    return complete


def _values_for(tokens: list[str], parser: Any) -> list[str] | None:
    """The values Tab offers after `tokens` (the current word possibly last and partial),
    or None to let invoke offer tasks and options."""
    task = next((t for t in reversed(tokens) if t in parser.contexts), None)
    if task is None:
        return None
    context = parser.contexts[task]
    after = tokens[len(tokens) - tokens[::-1].index(task) :]

    def long_flag(word: str) -> str | None:
        flag = context.flags[word] if word in context.flags else None  # noqa: SIM401 - .get misses aliases
        return f"--{flag.name.replace('_', '-')}" if flag is not None and flag.takes_value else None

    wanted = None
    if after and long_flag(after[-1]):
        wanted = long_flag(after[-1])  # `-s <Tab>`
    elif len(after) >= 2 and long_flag(after[-2]) and not after[-1].startswith("-"):
        wanted = long_flag(after[-2])  # `-s pos<Tab>`
    elif not (after and after[-1].startswith("-")) and all(w.startswith("-") for w in after[:-1]):
        wanted = ""  # the positional argument (the word being typed, if any, is last)
    if wanted is None or (task, wanted) not in _VALUES:
        return None
    try:
        return list(_VALUES[(task, wanted)]())
    except Exception:
        return []


def _list_tasks(self: Program) -> None:
    """A bare `inv`: the tasks, as `inv --list` shows them, instead of invoke's own options."""
    from invoke.exceptions import Exit

    self.list_tasks()
    raise Exit


def _task_names(program: Program) -> list[str]:
    parser = getattr(program, "parser", None)
    contexts = parser.contexts if parser is not None else {}
    return [str(name) for name in contexts]


def _flags(context: ParserContext | None) -> list[str]:
    if context is None:
        return []
    return [str(f) for f in context.flags] + [str(f) for f in context.inverse_flags]


def _explain(program: Program, message: str, context: ParserContext | None) -> str:
    """invoke's parse error, said as one sentence that names the fix."""
    if unknown := re.fullmatch(r"No idea what '(.*)' is!", message):
        return _unknown(program, unknown[1], context)
    if missing := re.fullmatch(
        r"'(.*)' did not receive required positional arguments: (.*)", message
    ):
        return _missing(program, missing[1], re.findall(r"'([^']*)'", missing[2]))
    if needs := re.fullmatch(
        r"Flag <Argument: ([^ >]+).*> needed value and was not given one!", message
    ):
        flag = needs[1].split(" (")[0].replace("_", "-")
        task = _task_with_flag(program, flag)
        return f"--{flag} needs a value" + (f": see `inv --help {task}`." if task else ".")
    return message.rstrip("!.") + ": see `inv --list` and `inv --help TASK`."


def _unknown(program: Program, word: str, context: ParserContext | None) -> str:
    task = getattr(context, "name", None)
    if task and word in _VALUE_WORDS.get(task, ()):
        return (
            f"`inv {task}` takes {word} instead of a file name, not beside one: give one of them."
        )
    if word.startswith("-"):
        words = _VALUE_WORDS.get(task, set()) if task else set()
        guess = closest(word, [*words, *_flags(context)] if task else _core_flags(program))
        owner, helps = (
            (f"`inv {task}`", f"`inv --help {task}`") if task else ("inv", "`inv --help`")
        )
        if guess:
            return f"{owner} has no option {word}: did you mean {guess}? ({helps} lists them)."
        return f"{owner} has no option {word}: {helps} lists them."
    guess = closest(word, _task_names(program))
    if guess:
        return f"No task named {word!r}: did you mean `inv {guess}`? (`inv --list` lists them)."
    if task:  # a word after a task that takes no (more) arguments
        return f"`inv {task}` takes no argument {word!r}: see `inv --help {task}`."
    return f"No task named {word!r}: `inv --list` lists the tasks."


def _core_flags(program: Program) -> list[str]:
    initial = getattr(program, "initial_context", None)
    return _flags(initial)


def _missing(program: Program, task: str, names: list[str]) -> str:
    parser = getattr(program, "parser", None)
    context = parser.contexts.get(task) if parser is not None else None
    wanted = " and ".join(name.upper() for name in names)
    first = context.args.get(names[0]) if context is not None and names else None
    help_text = str(getattr(first, "help", None) or "").rstrip(".")
    if len(names) == 1 and help_text:
        return f"`inv {task}` needs {wanted}: {help_text[:1].lower()}{help_text[1:]}."
    return f"`inv {task}` needs {wanted}: see `inv --help {task}`."


def _task_with_flag(program: Program, flag: str) -> str | None:
    """Which of the tasks on this command line has --flag (for the help to point at)."""
    parser = getattr(program, "parser", None)
    if parser is None:
        return None
    given = [a for a in sys.argv[1:] if a in parser.contexts]
    for name in reversed(given):
        if f"--{flag}" in parser.contexts[name].flags:
            return str(name)
    return None


def _refuse_flags_as_values(program: Program) -> None:
    """invoke takes an unknown `--word` where a positional argument is due as its value
    (`inv db.restore --lates`): refuse it as the unknown option it is."""
    from invoke.exceptions import ParseError

    for context in getattr(program, "tasks", []):
        for arg in context.positional_args:
            value = arg.value
            allowed = _VALUE_WORDS.get(str(context.name), set())
            if not isinstance(value, str) or value in allowed or not value.startswith("-"):
                continue
            if not Path(value).exists():
                raise ParseError(f"No idea what '{value}' is!", context)
