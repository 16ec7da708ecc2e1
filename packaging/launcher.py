"""Entry script of the frozen app: the same main() as the `neox-writer` console script.

A bundle has no `python -m`, so the child that compiles the fast kernels on a first start
(engine/fast/prepare.py) is this program run with --prepare-kernels MODEL.
"""
import sys

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--prepare-kernels":
        from engine.fast.prepare import main as prepare_kernels
        sys.exit(prepare_kernels(sys.argv[2:]))
    from app.__main__ import main
    sys.exit(main())
