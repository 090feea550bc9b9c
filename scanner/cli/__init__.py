"""The command line: main.py (argparse front end, the `scanner` entry point), common.py, audit.py,
signing.py, demo.py, outputs.py. Import the module you need: nothing is re-exported."""
