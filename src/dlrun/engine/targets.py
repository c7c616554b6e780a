"""Code a config names by `_target_` (the user's model, dataset, loss, transforms; torch's
optimizers): found, checked against its signature, and reported precisely when something is
wrong, before any data is read. Nothing here calls it: engine/build.py does.
"""

import inspect
import traceback
from collections.abc import Callable, Iterable
from difflib import get_close_matches
from importlib import import_module
from typing import Any

from dlrun.errors import ConfigError, UserCodeError, is_users, what_to_set

HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def locate(target: str, key: str) -> Any:
    """The object `target` ("module.Name") names. Says which of these went wrong: no such module,
    no such attribute in it, or an error raised while importing the user's file (shown with the
    user's own traceback)."""
    parts = target.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise ConfigError(f"{key}={target!r} is not a dotted path to a class or function (e.g. nets.TinyNet)")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            module = import_module(module_name)
            break
        except ModuleNotFoundError as error:
            missing = error.name or ""
            if not (module_name == missing or module_name.startswith(missing + ".")):
                raise _import_failed(key, target, module_name, error) from None
        except Exception as error:  # the user's file raised while it was imported
            raise _import_failed(key, target, module_name, error) from None
    else:
        raise ConfigError(
            f"{key}={target}: there is no module named {parts[0]!r} (looked in the project folder and the "
            "installed packages); check the name, or run from the folder that holds it"
        )
    found: Any = module
    for depth, name in enumerate(parts[cut:]):
        if not hasattr(found, name):
            owner = ".".join(parts[: cut + depth])
            names = [n for n in dir(found) if not n.startswith("_") and callable(getattr(found, n, None))]
            # its own classes and functions first, then what it imported (torch, typing, ...)
            home = getattr(found, "__name__", None)
            names.sort(key=lambda n: getattr(getattr(found, n), "__module__", None) != home)
            close = get_close_matches(name, names, n=3)
            offer = f"; did you mean {' or '.join(close)}?" if close else f"; it has: {', '.join(names[:12])}"
            raise ConfigError(f"{key}={target}: {owner} has no attribute {name!r}{offer}")
        found = getattr(found, name)
    return found


def check_arguments(
    factory: Callable, settings: dict[str, Any], key: str, provided: Iterable[str] = ()
) -> None:
    """Refuse a setting `factory` does not take, or a required argument nobody gives, naming the
    key and listing what it accepts. `provided`: the arguments dlrun itself passes."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return  # a builtin without a signature: let the call decide
    given = {name for name in settings if name not in HYDRA_KEYS}
    provided = set(provided)
    open_keywords = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    accepted = [name for name, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = sorted(given - set(accepted)) if not open_keywords else []
    name = _name(factory)
    if unknown:
        offer = ", ".join(n for n in accepted if n not in provided) or "nothing"
        raise ConfigError(f"{key}.{unknown[0]}: {name} does not take {unknown[0]!r}; it accepts: {offer}")
    for parameter_name, parameter in parameters.items():
        required = parameter.default is inspect.Parameter.empty and parameter.kind in (
            parameter.POSITIONAL_OR_KEYWORD,
            parameter.KEYWORD_ONLY,
        )
        if required and parameter_name not in given and parameter_name not in provided:
            raise ConfigError(f"{key}.{parameter_name} is required by {name}: set {key}.{parameter_name}=...")


def require(found: Any, kinds: tuple[type, ...], key: str, target: str, what: str) -> None:
    """A class must be one of `kinds`; a function is taken on trust until it returns."""
    if isinstance(found, type) and not issubclass(found, kinds):
        raise ConfigError(f"{key}={target} is not {what}")
    if not callable(found):
        raise ConfigError(f"{key}={target} is not a class or function")


def returned(made: Any, kinds: tuple[type, ...], key: str, target: str, what: str) -> Any:
    """What a factory function returned must be one of `kinds`."""
    if not isinstance(made, kinds):
        raise ConfigError(f"{key}={target} returned {type(made).__name__}, not {what}")
    return made


def raised(error: BaseException, key: str, target: str) -> UserCodeError:
    """The error for an exception raised inside the user's code while dlrun called it."""
    return UserCodeError(
        f"{key}={target} raised {type(error).__name__}: {error}{what_to_set(str(error))}",
        details=user_traceback(error),
    )


def user_traceback(error: BaseException) -> str:
    """The traceback frames of `error` in the user's files (not dlrun's, the standard library's
    or an installed package's)."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if is_users(frame.filename)]
    if not frames:
        return ""
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(error), error)
    return "Traceback (most recent call last):\n" + "".join(lines).rstrip()


def _import_failed(key: str, target: str, module: str, error: BaseException) -> UserCodeError:
    return UserCodeError(
        f"{key}={target}: importing {module} failed with {type(error).__name__}: {error}",
        details=user_traceback(error),
    )


def _name(factory: Callable) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', factory)}"
