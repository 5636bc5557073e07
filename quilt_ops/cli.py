"""The ``quilt-ops`` console script: ``fab`` with quilt-ops' tasks built in.

invoke's ``fab -c`` cannot load a collection from an installed package, so this
program carries the collection itself and works from any directory. Options,
config files (``~/.fabric.yaml``, ``-f FILE``) and ``FABRIC_QUILT_*`` variables
are Fabric's.
"""

from fabric import Config
from fabric.main import Fab

from . import __version__
from .executor import Executor
from .tasks import ns


class QuiltOps(Fab):
    def print_version(self) -> None:
        super().print_version()
        print(f"quilt-ops {__version__}")


program = QuiltOps(
    name="quilt-ops",
    binary="quilt-ops",
    binary_names=["quilt-ops"],
    version=__version__,
    namespace=ns,
    executor_class=Executor,
    config_class=Config,
)


def main() -> None:
    program.run()
