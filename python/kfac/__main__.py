"""python3 -m kfac: the package's and the library's versions (--version),
or where the library was loaded from (--library)."""
import argparse
import sys

import kfac


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m kfac",
                                 description="libkfac's Python binding (numpy level).")
    ap.add_argument("--version", action="store_true", help="print the versions of the package and of libkfac")
    ap.add_argument("--library", action="store_true", help="print the path of the libkfac loaded")
    args = ap.parse_args(argv)
    if args.library:
        print(kfac.library_path)
    if args.version or not args.library:
        print("kfac %s (libkfac %s)" % (kfac.__version__, kfac.version()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
