"""Makes the rubric files importable as package data (crmsync.prompts); nothing to edit here."""
