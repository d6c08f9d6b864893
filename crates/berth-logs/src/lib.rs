//! CloudWatch Logs (`Logs_20140328`) for Berth.
