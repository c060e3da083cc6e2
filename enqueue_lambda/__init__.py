"""The enqueue Lambda (S3 event -> job) and the dead-letter handler. Imports only
transcoder.domain.job."""
