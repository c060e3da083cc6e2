"""The job's contract and rules: messages, records, reason codes, errors. No I/O."""
