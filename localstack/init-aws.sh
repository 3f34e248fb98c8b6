#!/bin/sh
# Creates the queues that config/*.toml name (LocalStack's account is 000000000000).
set -e
awslocal sqs create-queue --queue-name orders-dlq
awslocal sqs create-queue --queue-name orders --attributes '{"VisibilityTimeout":"60","RedrivePolicy":"{\"deadLetterTargetArn\":\"arn:aws:sqs:us-east-1:000000000000:orders-dlq\",\"maxReceiveCount\":\"5\"}"}'
awslocal sqs create-queue --queue-name invoices
awslocal sqs create-queue --queue-name notifications
