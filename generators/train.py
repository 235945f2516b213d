"""`python -m generators.train ...`: the command line of generators.cli, under the name the
README shows.

Not importable: `generators.train` is the training function, and importing a submodule of
the same name would replace it on the package. The command's code is generators.cli.
"""

import sys

if __name__ != "__main__":
    raise ImportError("generators.train is the function generators.train(); the command line "
                      "is generators.cli (run it as python -m generators.train)")

from generators.cli import main  # noqa: E402

sys.exit(main())
