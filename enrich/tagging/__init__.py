"""Tags: the live vocabulary, the neighbour-vote prior and its decision head, caption features."""
