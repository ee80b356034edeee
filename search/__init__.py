"""Search: one function that answers "have we seen this image, or ones like it, and where?"."""
