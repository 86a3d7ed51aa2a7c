"""``python -m aisync ...`` runs the command line (the same as the ``aisync`` script)."""

from aisync.cli.main import main

if __name__ == "__main__":
    main()
