//! The event sources. Each polls its service, cuts batches, invokes the mapping's
//! function and settles what the function answered.

pub mod sqs;
pub mod stream;
