//! IAM policy parsing and evaluation.
