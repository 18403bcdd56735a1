"""riskgate's command line: ``riskgate COMMAND``. Thin: each command calls one library function.

Every module ``cli/<name>_cmd.py`` registers its commands on ``cli.app.app``
when imported; they are all imported here.
"""

import importlib
import pkgutil

from cli.app import app

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_cmd")):
    importlib.import_module(f"{__name__}.{_mod}")


def main() -> None:
    app()
