//! Retrying with exponential backoff, only for errors that say retrying can help.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::error::{Error, Result};

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First delay.
    pub min_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_retries: 8,
        }
    }
}

/// Runs `op` until it succeeds, fails with a non-retryable error
/// ([`Error::is_retryable`]), or runs out of retries. Each retry is logged
/// with `what` and the delay; delays are jittered.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use velo_datasource_core::{retry::{retry, RetryPolicy}, Error};
/// let mut calls = 0;
/// let policy = RetryPolicy { min_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5), max_retries: 5 };
/// let out = retry(&policy, "connect", || {
///     calls += 1;
///     let n = calls;
///     async move {
///         if n < 3 { Err(Error::Timeout { operation: "connect".into(), elapsed: Duration::ZERO }) } else { Ok(n) }
///     }
/// }).await;
/// assert_eq!(out.unwrap(), 3);
/// # });
/// ```
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, what: &str, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries)
        .with_jitter();
    op.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(Error::is_retryable)
        .notify(|err: &Error, delay: Duration| {
            tracing::warn!(operation = what, ?delay, "retrying after error: {err}");
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let mut calls = 0;
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_retries: 5,
        };
        let out: Result<()> = retry(&policy, "x", || {
            calls += 1;
            async { Err(Error::Schema("bad".into())) }
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries() {
        let mut calls = 0;
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_retries: 2,
        };
        let out: Result<()> = retry(&policy, "x", || {
            calls += 1;
            async {
                Err(Error::Timeout {
                    operation: "x".into(),
                    elapsed: Duration::ZERO,
                })
            }
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls, 3);
    }
}
