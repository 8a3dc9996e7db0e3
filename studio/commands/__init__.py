"""One module per CLI subcommand; each calls the same engine/data/eval functions as the UI."""
