"""Reading URLs, below the two stages that read them (fetch, lists): parse.py (WHATWG host rules, one
canonical Target), normal.py (URL and host normal form). Import the module you need: nothing is
re-exported."""
