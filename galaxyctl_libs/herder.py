"""Kept so that supervisor files written by an older galaxyctl (``python -m galaxyctl_libs.herder``)
keep running until the next ``update`` rewrites them; the herder is galaxyctl_libs.backends.herder."""

if __name__ == "__main__":
    import sys

    from galaxyctl_libs.backends.herder import main

    sys.exit(main())
