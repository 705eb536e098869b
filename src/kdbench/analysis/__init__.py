"""What a run means: statistics, verdicts, diagnosis, the report and its figures."""
