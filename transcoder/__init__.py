"""A video transcoding fleet: S3 uploads -> SQS -> FFmpeg 720p/1080p -> S3, status in DynamoDB."""

__version__ = "0.1.0"
