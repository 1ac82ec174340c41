//! Client-side rate limit on API server requests, as client-go applies
//! `clientConnection.qps` / `.burst` (`--kube-api-qps` / `--kube-api-burst`).
//!
//! client-go's rules (`rest.RESTClientFor`): a qps of 0 means the default
//! 5, a burst of 0 the default 10, a negative qps no limit at all; otherwise
//! a token bucket that starts full with `burst` tokens and refills at `qps`
//! tokens per second. Every request takes one token before it is sent,
//! whatever it is: a list, a watch (once, however long its stream lasts) or
//! a write.
//!
//! The limit is a tower [`Layer`] on the `kube::Client`'s service stack; the
//! client's buffer worker waits in [`Service::poll_ready`] until a token is
//! there, so requests leave in order and none is sent early.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// client-go's `DefaultQPS`.
pub const DEFAULT_QPS: f32 = 5.0;
/// client-go's `DefaultBurst`.
pub const DEFAULT_BURST: i32 = 10;

/// A token bucket's parameters: `qps` tokens per second, at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Refill rate, tokens per second (> 0).
    pub qps: f64,
    /// Bucket size and initial content (>= 1).
    pub burst: u32,
}

impl RateLimit {
    /// The limit client-go derives from `qps` and `burst`: 0 means the
    /// default (5 and 10), a negative or non-finite qps means no limit
    /// (`None`). A negative burst (refused by validation) counts as 0.
    pub fn from_client_config(qps: f32, burst: i32) -> Option<Self> {
        let qps = if qps == 0.0 { DEFAULT_QPS } else { qps };
        if !(qps.is_finite() && qps > 0.0) {
            return None;
        }
        let burst = if burst == 0 { DEFAULT_BURST } else { burst };
        Some(Self {
            qps: f64::from(qps),
            // golang.org/x/time/rate with burst 0 never allows an event
            // (client-go never builds one: 0 is replaced by 10); one
            // token is the least that lets requests through.
            burst: u32::try_from(burst).unwrap_or(0).max(1),
        })
    }
}

/// A token bucket on tokio's clock (so tests can pause time).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            last: Instant::now(),
        }
    }

    /// Takes one token at `now`, or says how long until one is there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.limit.qps).min(f64::from(self.limit.burst));
        // The epsilon absorbs rounding in the refill sums: a token due now
        // is there now.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.limit.qps;
            // Round up to whole microseconds: waking a hair early would
            // only find the bucket still short and wait again.
            Err(Duration::from_micros((wait * 1e6).ceil() as u64).max(Duration::from_micros(1)))
        }
    }
}

/// A [`Layer`] that rate-limits requests with a [`TokenBucket`]; `None`
/// passes everything through.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitLayer {
    limit: Option<RateLimit>,
}

impl RateLimitLayer {
    /// A layer for this limit (`None`: no limit).
    pub fn new(limit: Option<RateLimit>) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            bucket: self.limit.map(TokenBucket::new),
            token: Token::None,
        }
    }
}

/// A `kube::Client` for `config` whose requests go through `limit`
/// (`None`: unlimited); otherwise kube's default stack.
pub fn client(config: kube::Config, limit: Option<RateLimit>) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&RateLimitLayer::new(limit))
        .build())
}

/// Where a [`RateLimited`] service stands with its next request's token.
#[derive(Debug)]
enum Token {
    None,
    Waiting(Pin<Box<Sleep>>),
    Held,
}

/// The service made by [`RateLimitLayer`].
#[derive(Debug)]
pub struct RateLimited<S> {
    inner: S,
    bucket: Option<TokenBucket>,
    token: Token,
}

impl<S, Req> Service<Req> for RateLimited<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let Some(bucket) = self.bucket.as_mut() else {
            return self.inner.poll_ready(cx);
        };
        loop {
            match &mut self.token {
                Token::Held => return self.inner.poll_ready(cx),
                Token::Waiting(sleep) => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.token = Token::None;
                }
                Token::None => match bucket.try_take(Instant::now()) {
                    Ok(()) => self.token = Token::Held,
                    Err(wait) => {
                        self.token = Token::Waiting(Box::pin(tokio::time::sleep(wait)));
                    }
                },
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The token taken in poll_ready is spent by this request.
        self.token = Token::None;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests;
