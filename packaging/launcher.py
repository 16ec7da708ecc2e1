"""Entry script of the frozen app: the same main() as the `neox-writer` console script."""
import sys

from app.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
