"""The command-line tools, one module per command: parse flags, call the library, print, exit."""
