"""Named implementations that config strings select: the table behind each extension point."""
import difflib
from typing import Callable, TypeVar

from ernie_qat.config import ConfigError

T = TypeVar("T")


class Registry(dict):
    """name -> implementation; `register(name)` decorates one in, `lookup` finds one or names the config key."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def add(implementation: T) -> T:
            self[name] = implementation
            return implementation
        return add

    def lookup(self, name: str, key: str):
        """The implementation registered as `name`; ConfigError naming the config `key` if there is none."""
        if name not in self:
            close = difflib.get_close_matches(name, list(self), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise ConfigError(f"`{key}`: unknown {self.kind} `{name}`; registered: {sorted(self) or 'none'}{hint}")
        return self[name]
