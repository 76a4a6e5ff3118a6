"""Host-side tools (CPython): simulator, benchmark, build and vending."""
