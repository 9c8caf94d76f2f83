"""The approval page's work: links and refusals, the POST guard, forms, acting on a link."""
