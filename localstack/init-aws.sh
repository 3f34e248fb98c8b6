#!/bin/sh
# Creates the sources that config/*.toml and localstack/esmd.toml name on LocalStack
# (account 000000000000, us-east-1). Run by LocalStack once it is ready.
set -e
awslocal sqs create-queue --queue-name orders-dlq
awslocal sqs create-queue --queue-name orders --attributes '{"VisibilityTimeout":"60","RedrivePolicy":"{\"deadLetterTargetArn\":\"arn:aws:sqs:us-east-1:000000000000:orders-dlq\",\"maxReceiveCount\":\"5\"}"}'
awslocal sqs create-queue --queue-name invoices
awslocal sqs create-queue --queue-name notifications
awslocal kinesis create-stream --stream-name clicks --shard-count 2
awslocal dynamodb create-table --table-name orders \
    --attribute-definitions AttributeName=pk,AttributeType=S \
    --key-schema AttributeName=pk,KeyType=HASH \
    --billing-mode PAY_PER_REQUEST \
    --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES
