//! A tower [`Layer`] that reports every HTTP request to the supervisor (the `tower`
//! feature): it takes a [`RequestGuard`] when the inner service is called and holds it
//! until the response body is done (its last frame, an error, or the body dropped, so a
//! streaming body counts as busy while it streams), and, once the worker is stopping,
//! answers HTTP/1 requests with `Connection: close` so that keep-alive clients take their
//! next request to another worker instead of racing this one's close. It owns nothing but
//! that wrapping: the accounting is [`WorkerHandle`]'s.
//!
//! ```ignore
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(handler))
//!     .layer(drover_os::embedded::LoadLayer::new(worker.clone()));
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{HeaderValue, CONNECTION};
use http_body::{Body, Frame, SizeHint};
use tower_layer::Layer;
use tower_service::Service;

use super::byo::{RequestGuard, WorkerHandle};

/// Counts each request as busy from the call to the end of its response body; see the
/// module docs. `LoadLayer::new(worker.clone())`.
#[derive(Clone, Debug)]
pub struct LoadLayer {
    worker: WorkerHandle,
}

impl LoadLayer {
    pub fn new(worker: WorkerHandle) -> LoadLayer {
        LoadLayer { worker }
    }
}

impl<S> Layer<S> for LoadLayer {
    type Service = LoadService<S>;

    fn layer(&self, inner: S) -> LoadService<S> {
        LoadService {
            inner,
            worker: self.worker.clone(),
        }
    }
}

/// The service [`LoadLayer`] wraps around another.
#[derive(Clone, Debug)]
pub struct LoadService<S> {
    inner: S,
    worker: WorkerHandle,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for LoadService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = LoadFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let http1 = req.version() <= http::Version::HTTP_11;
        let guard = self.worker.request_started();
        LoadFuture {
            inner: self.inner.call(req),
            guard: Some(guard),
            worker: self.worker.clone(),
            http1,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`LoadService`].
    pub struct LoadFuture<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
        worker: WorkerHandle,
        http1: bool,
    }
}

impl<F, B, E> Future for LoadFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<CountedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        // An error ends the request here (the guard drops with the future).
        let mut response = result?;
        if *this.http1 && this.worker.is_stopping() {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| CountedBody { inner, guard })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its request when it is done or dropped.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        guard: Option<RequestGuard>,
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::byo::tests::detached_handle;

    /// Polls once: the services and bodies here never wait.
    fn now<F: Future>(f: F) -> F::Output {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(f).poll(&mut cx) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("pending"),
        }
    }

    /// A body of the given chunks, one frame each.
    struct Chunks(Vec<&'static [u8]>);

    impl Body for Chunks {
        type Data = &'static [u8];
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(match self.0.first().copied() {
                Some(b"err") => Some(Err("broken stream")),
                Some(chunk) => {
                    self.0.remove(0);
                    Some(Ok(Frame::data(chunk)))
                }
                None => None,
            })
        }
    }

    /// A service answering every request with `body`, or failing.
    #[derive(Clone)]
    struct Answer(Result<Vec<&'static [u8]>, &'static str>);

    impl Service<http::Request<()>> for Answer {
        type Response = http::Response<Chunks>;
        type Error = &'static str;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::ready(self.0.clone().map(|b| http::Response::new(Chunks(b))))
        }
    }

    fn next_frame<B: Body + Unpin>(body: &mut B) -> Option<Result<Frame<B::Data>, B::Error>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(body).poll_frame(&mut cx) {
            Poll::Ready(f) => f,
            Poll::Pending => panic!("pending"),
        }
    }

    #[test]
    fn a_request_is_busy_until_its_body_is_done() {
        let worker = detached_handle();
        let mut svc = LoadLayer::new(worker.clone()).layer(Answer(Ok(vec![b"a", b"b"])));
        let response = now(svc.call(http::Request::new(()))).unwrap();
        assert!(response.headers().get(CONNECTION).is_none());
        let mut body = response.into_body();
        assert_eq!(worker.load(), (1, 0), "answered, body not sent yet");
        assert!(next_frame(&mut body).is_some());
        assert_eq!(worker.load(), (1, 0), "still streaming");
        assert!(next_frame(&mut body).is_some());
        assert!(next_frame(&mut body).is_none());
        assert_eq!(worker.load(), (0, 1), "the last frame ends the request");
        drop(body);
        assert_eq!(worker.load(), (0, 1), "counted once");
    }

    #[test]
    fn a_dropped_or_broken_body_ends_its_request() {
        let worker = detached_handle();
        let mut svc = LoadLayer::new(worker.clone()).layer(Answer(Ok(vec![b"a", b"err"])));
        let mut body = now(svc.call(http::Request::new(()))).unwrap().into_body();
        assert!(next_frame(&mut body).is_some_and(|f| f.is_ok()));
        assert!(next_frame(&mut body).is_some_and(|f| f.is_err()));
        assert_eq!(worker.load(), (0, 1), "a body error ends the request");
        drop(body);
        let body = now(svc.call(http::Request::new(()))).unwrap().into_body();
        assert_eq!(worker.load(), (1, 1));
        drop(body);
        assert_eq!(worker.load(), (0, 2), "a dropped body ends the request");
    }

    #[test]
    fn an_error_ends_the_request_and_a_stopping_worker_closes_http1() {
        let worker = detached_handle();
        let mut failing = LoadLayer::new(worker.clone()).layer(Answer(Err("boom")));
        assert!(now(failing.call(http::Request::new(()))).is_err());
        assert_eq!(worker.load(), (0, 1));

        worker.shared.stop.trigger();
        let mut svc = LoadLayer::new(worker.clone()).layer(Answer(Ok(vec![])));
        let response = now(svc.call(http::Request::new(()))).unwrap();
        assert_eq!(response.headers()[CONNECTION], "close");
        let mut h2 = http::Request::new(());
        *h2.version_mut() = http::Version::HTTP_2;
        let response = now(svc.call(h2)).unwrap();
        assert!(
            response.headers().get(CONNECTION).is_none(),
            "not in HTTP/2"
        );
    }
}
