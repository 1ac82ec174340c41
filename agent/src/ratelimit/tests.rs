//! Tests of [`super`].

use super::*;

#[test]
fn client_go_defaults_and_no_limit() {
    assert_eq!(
        RateLimit::from_client_config(0.0, 0),
        Some(RateLimit {
            qps: 5.0,
            burst: 10
        })
    );
    assert_eq!(
        RateLimit::from_client_config(50.0, 100),
        Some(RateLimit {
            qps: 50.0,
            burst: 100
        })
    );
    assert_eq!(
        RateLimit::from_client_config(2.0, 0),
        Some(RateLimit {
            qps: 2.0,
            burst: 10
        })
    );
    assert_eq!(RateLimit::from_client_config(-1.0, 10), None);
    assert_eq!(RateLimit::from_client_config(f32::NAN, 10), None);
}

#[tokio::test(start_paused = true)]
async fn bucket_starts_full_then_refills_at_qps() {
    let mut b = TokenBucket::new(RateLimit { qps: 4.0, burst: 3 });
    let t0 = Instant::now();
    for _ in 0..3 {
        assert_eq!(b.try_take(t0), Ok(()));
    }
    assert_eq!(b.try_take(t0), Err(Duration::from_millis(250)));
    let wait = b.try_take(t0 + Duration::from_millis(249)).unwrap_err();
    assert!(wait <= Duration::from_micros(1001), "{wait:?}");
    assert_eq!(b.try_take(t0 + Duration::from_millis(250)), Ok(()));
    // A long pause refills to burst, not beyond.
    let t1 = t0 + Duration::from_secs(100);
    for _ in 0..3 {
        assert_eq!(b.try_take(t1), Ok(()));
    }
    assert!(b.try_take(t1).is_err());
}

/// A service that records when it was called.
#[derive(Clone, Default)]
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<Instant>>>);

impl Service<()> for Recorder {
    type Response = ();
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<(), Self::Error>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, (): ()) -> Self::Future {
        self.0.lock().expect("lock").push(Instant::now());
        std::future::ready(Ok(()))
    }
}

async fn call<S: Service<(), Error = std::convert::Infallible>>(svc: &mut S) {
    std::future::poll_fn(|cx| svc.poll_ready(cx))
        .await
        .expect("ready");
    svc.call(()).await.expect("call");
}

#[tokio::test(start_paused = true)]
async fn service_waits_for_tokens() {
    let rec = Recorder::default();
    let mut svc = RateLimitLayer::new(Some(RateLimit {
        qps: 10.0,
        burst: 2,
    }))
    .layer(rec.clone());
    let t0 = Instant::now();
    for _ in 0..5 {
        call(&mut svc).await;
    }
    let at: Vec<Duration> = rec
        .0
        .lock()
        .expect("lock")
        .iter()
        .map(|t| *t - t0)
        .collect();
    let ms = |m| Duration::from_millis(m);
    assert_eq!(at.len(), 5);
    assert_eq!(&at[..2], &[ms(0), ms(0)], "burst goes at once");
    for (i, want) in [(2, 100), (3, 200), (4, 300)] {
        assert!(at[i] >= ms(want) && at[i] < ms(want + 2), "{at:?}");
    }

    // No limit: all at once.
    let rec = Recorder::default();
    let mut svc = RateLimitLayer::new(None).layer(rec.clone());
    let t0 = Instant::now();
    for _ in 0..50 {
        call(&mut svc).await;
    }
    assert!(rec.0.lock().expect("lock").iter().all(|t| *t == t0));
}
