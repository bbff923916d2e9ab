"""`python -m assay.client` runs the CLI."""

from assay.client.cli import main

main()
