"""factory_boy, imported under the name `factory_boy`.

Our Django app is called `factory` (the design's name for the Model Factory), which shadows
factory_boy's top-level package `factory`. This loads factory_boy from site-packages under another
name; its modules import each other relatively, so they work unchanged. Test factories do
`from core.factory_boy import factory_boy as fb`. (Its DictFactory/ListFactory path does an absolute
`import factory.base` and is not usable here; nothing of ours needs it.)
"""
import importlib.util
import sys
import sysconfig
from pathlib import Path


def _load():
    if "factory_boy" in sys.modules:
        return sys.modules["factory_boy"]
    for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path}:
        init = Path(base) / "factory" / "__init__.py"
        if init.is_file() and (Path(base) / "factory" / "fuzzy.py").is_file():
            spec = importlib.util.spec_from_file_location("factory_boy", init, submodule_search_locations=[str(init.parent)])
            module = importlib.util.module_from_spec(spec)
            sys.modules["factory_boy"] = module
            spec.loader.exec_module(module)
            importlib.import_module("factory_boy.django")
            return module
    raise ImportError("factory_boy is not installed (pip install factory-boy)")


factory_boy = _load()
