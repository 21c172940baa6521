"""The embedded local stack: the Tansu broker and Triton launchers, process helpers, the private-stack
harness and the demo."""
