"""Command-line tools behind ``aliked-vo`` (one module per subcommand)."""
