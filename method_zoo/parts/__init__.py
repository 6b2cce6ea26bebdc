"""Method-specific parts (heads, prototypes, centres) that more than one file of a method uses."""
