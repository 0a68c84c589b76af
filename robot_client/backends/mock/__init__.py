"""Mock hardware: a small deterministic table-top simulator with language tasks."""
