"""Offline training of every artifact the product ships: the taggers, the fusion gate, the CF adapter,
the tag prior and prototypes, the semantic-ID codebooks."""
