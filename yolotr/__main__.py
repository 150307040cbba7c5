import sys

from yolotr.cli import main

if __name__ == "__main__":  # not when a spawned child (the checkpoint writer) re-imports the main module
    sys.exit(main())
