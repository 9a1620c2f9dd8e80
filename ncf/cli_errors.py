"""One line for each parsing error of ``train.py``: jsonargparse's messages (which may span lines) turned
into what is wrong, where (the option, or the YAML file and line), and the fix (the closest valid key)."""
from __future__ import annotations

import contextlib
import difflib
import re
import sys
from typing import Iterable, Optional

from .errors import known_subclasses

__all__ = ["argument_error_line", "closest", "closest_key", "config_files", "parser_keys", "yaml_key_line"]


def parser_keys(parser) -> list[str]:
    """Every key a parser accepts (``model.factor``, ``trainer.max_epochs``, ...)."""
    try:
        return [k for k in parser.get_defaults().keys() if k not in ("config", "__default_config__")]
    except Exception:  # a parser whose defaults cannot be listed: no suggestion, the error still reads well
        return []


def closest(word: str, choices: Iterable[str]) -> Optional[str]:
    """The choice nearest ``word`` (difflib's ratio over 0.6), or None.

    >>> closest("model.factr", ["model.factor", "model.lr"]), closest("xyz", ["model.lr"])
    ('model.factor', None)
    """
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def closest_key(key: str, keys: Iterable[str]) -> Optional[str]:
    """The valid key nearest a dotted ``key``: within its section when the section exists (``model.factr``
    against ``model.*`` leaves), else over whole keys (``modle.factor``).

    >>> closest_key("model.factr", ["model.factor", "model.dropout"]), closest_key("model.nosuch", ["model.dropout"])
    ('model.factor', None)
    """
    keys = list(keys)
    section, _, leaf = key.rpartition(".")
    same = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == section}
    if section and same:
        near = closest(leaf, same)
        return same[near] if near else None
    return closest(key, keys)


def config_files(argv: list[str]) -> list[str]:
    """The files given with ``--config`` / ``-c`` on a command line, in order."""
    files = []
    for k, a in enumerate(argv):
        if a in ("--config", "-c") and k + 1 < len(argv):
            files.append(argv[k + 1])
        elif a.startswith("--config="):
            files.append(a.split("=", 1)[1])
    return files


def yaml_key_line(path: str, key: str) -> Optional[int]:
    """The 1-based line of the dotted ``key`` (``model.factr``) in a YAML file, or None (read with
    ``yaml.compose``, which keeps each node's position)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            node = yaml.compose(f, Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    line = None
    for part in key.split("."):
        if not isinstance(node, yaml.MappingNode):
            return None
        match = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
        if match is None:
            return None
        line, node = match[0].start_mark.line + 1, match[1]
    return line


def argument_error_line(message: str, argv: list[str], keys: list[str], subcommands: list[str],
                        subcommand: Optional[str]) -> str:
    """jsonargparse's error (which may span lines) as one line: what is wrong, where, and the fix."""
    usage = f"`train.py {subcommand or ''} --help` lists the options".replace("  ", " ")
    if m := re.search(r"invalid choice: '([^']*)'", message):
        near = closest(m.group(1), subcommands)
        return (f"unknown subcommand {m.group(1)!r}; "
                + (f"did you mean {near}? " if near else "") + f"use one of {', '.join(subcommands)}.")
    if m := re.search(r"unrecognized arguments: (.*)", message):
        unknown = [a.split("=", 1)[0] for a in m.group(1).split() if a.startswith("--")] or m.group(1).split()[:1]
        near = {opt: closest_key(opt.lstrip("-"), keys) for opt in unknown}
        if len(unknown) == 1 and near[unknown[0]]:
            return f"unknown option {unknown[0]}; did you mean --{near[unknown[0]]}?"
        named = ", ".join(opt + (f" (did you mean --{near[opt]}?)" if near[opt] else "") for opt in unknown)
        return f"unknown option{'s' if len(unknown) > 1 else ''} {named}; {usage}."
    if m := re.search(r"does not accept option '([^']*)'", message):
        key = m.group(1)
        near = closest_key(key, keys)
        fix = f"did you mean {near}?" if near else f"{usage}."
        for path in reversed(config_files(argv)):  # a later file overrides an earlier one: look there first
            line = yaml_key_line(path, key)
            if line is not None:
                return f"{path}, line {line}: unknown key {key}; {fix}"
        return f"unknown option --{key}; {fix}"
    if (m := re.search(r'Parser key "([^"]+)"', message)) and (nested := init_args_error(m.group(1), message, argv)):
        return nested
    if m := re.search(r'Parser key "([^"]+)"', message):
        key = m.group(1)
        given = re.search(r"(?:Given|Got) value: (.*)", message)
        expected = sorted({"null" if t == "NoneType" else t
                           for t in re.findall(r"Expected a <class '([\w.]+)'>", message)}, key=lambda t: t == "null")
        where = f"--{key}"
        for path in reversed(config_files(argv)):
            if f"--{key}" not in argv and not any(a.startswith(f"--{key}=") for a in argv):
                line = yaml_key_line(path, key)
                if line is not None:
                    where = f"{path}, line {line}: {key}"
                    break
        if not given and not expected:  # e.g. a config file that does not exist: jsonargparse's words say it
            return f"{where}: {' '.join(message[m.end():].lstrip(':').split())}"
        what = f"{given.group(1).strip()!r} is not a valid value" if given else "invalid value"
        path = re.search(r"""class_path['"]?[:=] ?['"]([\w.]+)['"]""", given.group(1)) if given else None
        if path and key.endswith("network"):  # a network's class that could not be loaded: say why
            from .contract import import_problem

            why = import_problem(path.group(1))
            if why:
                return (f"{where}: {path.group(1)!r} names no class implementing ncf.contract.Recommender: {why}; give "
                        f"its import path, e.g. ncf.models.NeuMF, ncf.mf.MF or mypackage.MyModel.")
        return (f"{where}: {what}" + (f" (expected {' or '.join(expected)})" if expected else "")
                + f"; fix the value ({usage}).")
    return " ".join(message.split())


def init_args_error(key: str, message: str, argv: list[str]) -> Optional[str]:
    """One line for an error inside a class given by ``class_path`` (``model.network``): an unknown
    constructor argument (with the closest one), a bad value, or a class path that names no class."""
    import inspect

    where_of = {}
    for arg in argv:
        if arg.startswith(f"--{key}."):
            where_of[arg[len(key) + 3:].split("=", 1)[0].removeprefix("init_args.")] = arg.split("=", 1)[0]

    def where(arg: str) -> str:
        if arg in where_of:
            return where_of[arg]
        for path in reversed(config_files(argv)):
            for dotted in (f"{key}.init_args.{arg}", f"{key}.{arg}"):
                line = yaml_key_line(path, dotted)
                if line is not None:
                    return f"{path}, line {line}: {dotted}"
        return f"--{key}.{arg}"

    cls_path = re.search(r"class_path(?:=| )'([\w.]+)'", message)  # NestedArg's form, then a given class_path's
    if m := re.search(r"Option '(\w+)' is not accepted", message):
        params: list[str] = []
        cls = _named_class(cls_path.group(1), message) if cls_path else None
        if cls is not None:
            params = [p for p in inspect.signature(cls).parameters if p not in ("n_users", "n_items", "args", "kwargs")]
        spot = where(m.group(1))
        first = list(inspect.signature(cls).parameters)[:2] if cls is not None else []
        if m.group(1) in first and first != ["n_users", "n_items"]:  # the data's sizes are passed first
            return (f"{spot}: {cls_path.group(1)}'s __init__ starts with {', '.join(first)}, where a network takes "
                    f"(n_users, n_items, ...) first (the data's sizes, passed by position); put them first.")
        near = closest(m.group(1), params)
        suggestion = f"--{key}.{near}" if spot.startswith("--") else f"{key}.init_args.{near}"
        fix = (f"did you mean {suggestion}?" if near else f"it takes {', '.join(params)}." if params
               else "it takes no arguments." if cls is not None else "see --help.")
        return (f"{spot}: unknown argument {m.group(1)!r} of {cls_path.group(1) if cls_path else key}; {fix}")
    if m := re.search(r'Parser key "(\w+)":\s+Expected a <class \'([\w.]+)\'>\. Got value: (.*?)\. Got value', message):
        return f"{where(m.group(1))}: {m.group(3)!r} is not a valid value (expected {m.group(2)})."
    if "has no attribute" in message or "either not accessible or invalid" in message:
        given = re.search(r"Given value: (.*)", message)
        name = given.group(1).strip() if given else "?"
        base = _expected_base(message)
        if base is not None:  # a kind of class the config chooses among, e.g. model.objective
            known = known_subclasses(base)
            by_name = {k.rsplit(".", 1)[-1]: k for k in sorted(known, reverse=True)}  # the shortest path wins
            near = closest(name, known) or by_name.get(closest(name.rsplit(".", 1)[-1], by_name) or "")
            choices = (f"use one of {', '.join(sorted(known))}." if len(known) <= 8 else
                       "" if near else f"give a {base.__name__} subclass by its import path (module.Class).")
            return (f"--{key}: {name!r} is not a known {base.__name__}; " + (f"did you mean {near}? " if near else "")
                    + choices).rstrip()
        from .contract import import_problem

        if given_path := re.search(r"""['"]class_path['"]: ['"]([\w.]+)['"]""", name):  # a whole spec was printed
            name = given_path.group(1)
        why = import_problem(name) if re.fullmatch(r"[\w.]+", name) else ""
        return (f"--{key}: {name!r} names no class implementing ncf.contract.Recommender"
                f"{f': {why}' if why else ''}; give its import path, e.g. ncf.models.NeuMF, ncf.mf.MF or "
                f"mypackage.MyModel.")
    return None


def _expected_base(message: str) -> Optional[type]:
    """The class a ``class_path`` option expects (jsonargparse's ``Subtypes: [<class ...>]``), when one of its
    subclasses is to be named (not a network: any Recommender class is accepted by its import path)."""
    subtypes = re.search(r"Subtypes: \[(.*)", message)  # e.g. [list[...Callback], <class '...Callback'>, <class 'NoneType'>]
    for module, name in re.findall(r"<class '([\w.]+)\.(\w+)'>", subtypes.group(1) if subtypes else ""):
        base = getattr(sys.modules.get(module), name, None)
        if isinstance(base, type):
            return base
    return None


def _named_class(class_path: str, message: str) -> Optional[type]:
    """The class ``class_path`` names: among the expected base's subclasses imported so far, else a network."""
    base = _expected_base(message)
    if base is not None:
        return known_subclasses(base).get(class_path)
    with contextlib.suppress(Exception):
        from .contract import network_class

        return network_class(class_path)
    return None
