"""`python -m carebase` runs the command line."""

from carebase.cli.main import main

main()
