"""Named implementations that config strings select: the table behind each extension point."""
from typing import Callable, Dict, List, TypeVar

from ernie_qat.config import ConfigError
from ernie_qat.errors import did_you_mean

T = TypeVar("T")


class Registry(dict):
    """name -> implementation; `register(name)` decorates one in, `lookup` finds one or names the config key.

    An entry registered with `section="quant"` is a value `quant.method` may take (ernie_qat.config);
    one registered with a `role` builds only what has that role, so it is built only when that role is asked for.
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.sections: Dict[str, str] = {}   # name -> config section whose `method` selects it
        self.roles: Dict[str, str] = {}      # name -> the role of what it builds (model transforms), if declared

    def register(self, name: str, section: str = "", role: str = "") -> Callable[[T], T]:
        def add(implementation: T) -> T:
            self[name] = implementation
            if section:
                self.sections[name] = section
            if role:
                self.roles[name] = role
            return implementation
        return add

    def methods(self, section: str) -> List[str]:
        """The names `<section>.method` may take from this registry."""
        return [name for name, owner in self.sections.items() if owner == section]

    def lookup(self, name: str, key: str, source: str = ""):
        """The implementation registered as `name`; a ConfigError naming the config `key` (and the file or
        override `source` that set it) if there is none."""
        if name not in self:
            raise ConfigError(f"{source + ': ' if source else ''}`{key}`: unknown {self.kind} `{name}`; "
                              f"registered: {sorted(self) or 'none'}{did_you_mean(name, self)}")
        return self[name]
