"""What is done with an item's vector: residual-quantised semantic IDs and the CF adapter."""
