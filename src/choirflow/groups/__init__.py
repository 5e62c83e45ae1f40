"""ChoirRec semantic user groups: profile inputs, LLM labelling, RQ-KMeans codes, group priors."""
