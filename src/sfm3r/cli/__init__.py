"""The click command line: parse, build a config, call one pipeline function, print a summary."""
