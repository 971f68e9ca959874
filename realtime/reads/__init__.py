"""What a connect, a resume and a run list read: the selectors, their fast paths, their read threads."""
