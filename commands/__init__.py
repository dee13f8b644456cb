"""Extra `faust -A app ...` subcommands."""
