"""Named implementations that config strings select: the table behind each extension point."""
from typing import Callable, Dict, List, TypeVar

from ernie_qat.config import ConfigError
from ernie_qat.errors import did_you_mean

T = TypeVar("T")


class Registry(dict):
    """name -> implementation; `register(name)` decorates one in, `lookup` finds one or names the config key.

    An entry registered with `section="quant"` is a value `quant.method` may take (ernie_qat.config).
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.sections: Dict[str, str] = {}   # name -> config section whose `method` selects it

    def register(self, name: str, section: str = "") -> Callable[[T], T]:
        def add(implementation: T) -> T:
            self[name] = implementation
            if section:
                self.sections[name] = section
            return implementation
        return add

    def methods(self, section: str) -> List[str]:
        """The names `<section>.method` may take from this registry."""
        return [name for name, owner in self.sections.items() if owner == section]

    def lookup(self, name: str, key: str):
        """The implementation registered as `name`; a ConfigError naming the config `key` if there is none."""
        if name not in self:
            raise ConfigError(f"`{key}`: unknown {self.kind} `{name}`; registered: {sorted(self) or 'none'}"
                                f"{did_you_mean(name, self)}")
        return self[name]
