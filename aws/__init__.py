"""Deployment to the user's own AWS account: S3 bucket, ECR image, one EC2 instance."""
