//! DynamoDB metadata store.
