//! [`UpstreamFuture`]: waits for the client, then for the upstream's response head, within the
//! head timeout.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::reply::{from_upstream, status_reply, UpstreamBody};
use crate::error::{BoxError, Chain};

pin_project! {
    /// The future [`Upstream`](super::Upstream) returns: the upstream's response head, or the gateway's answer.
    #[must_use = "futures do nothing unless polled"]
    pub struct UpstreamFuture<C, R>
    where
        C: Service<R>,
    {
        #[pin]
        state: State<C, R>,
        #[pin]
        deadline: Option<Sleep>,
    }
}

pin_project! {
    #[project = StateProj]
    pub(super) enum State<C, R>
    where
        C: Service<R>,
    {
        // Waiting for the client to be ready.
        Waiting { client: C, request: Option<R> },
        // Waiting for the upstream's response head.
        Sent { #[pin] response: C::Future },
        // Answered without the upstream.
        Answered { status: StatusCode },
    }
}

impl<C: Service<R>, R> UpstreamFuture<C, R> {
    pub(super) fn new(state: State<C, R>, deadline: Option<Sleep>) -> Self {
        Self { state, deadline }
    }
}

impl<C, ReqBody, ResBody> Future for UpstreamFuture<C, Request<ReqBody>>
where
    C: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C::Error: Into<BoxError>,
{
    type Output = Result<Response<UpstreamBody<ResBody>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // A head that is ready wins over a deadline that passed in the same instant.
        if let Poll::Ready(response) = poll_upstream(this.state.as_mut(), cx) {
            return Poll::Ready(Ok(response));
        }
        match this.deadline.as_pin_mut().map(|deadline| deadline.poll(cx)) {
            Some(Poll::Ready(())) => {
                tracing::warn!("no response head from the upstream in time: 504");
                Poll::Ready(Ok(status_reply(StatusCode::GATEWAY_TIMEOUT)))
            }
            _ => Poll::Pending,
        }
    }
}

impl<C: Service<R>, R> fmt::Debug for UpstreamFuture<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamFuture").finish_non_exhaustive()
    }
}

fn poll_upstream<C, ReqBody, ResBody>(
    mut state: Pin<&mut State<C, Request<ReqBody>>>,
    cx: &mut Context<'_>,
) -> Poll<Response<UpstreamBody<ResBody>>>
where
    C: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C::Error: Into<BoxError>,
{
    let bad_gateway = |error: C::Error| {
        let error: BoxError = error.into();
        let error = Chain(&*error);
        tracing::warn!(%error, "the upstream request failed: 502");
        status_reply(StatusCode::BAD_GATEWAY)
    };
    loop {
        match state.as_mut().project() {
            StateProj::Waiting { client, request } => {
                if let Err(error) = ready!(client.poll_ready(cx)) {
                    return Poll::Ready(bad_gateway(error));
                }
                // The request is only missing when this future is polled after it completed.
                let Some(request) = request.take() else {
                    return Poll::Ready(status_reply(StatusCode::BAD_GATEWAY));
                };
                let response = client.call(request);
                state.set(State::Sent { response });
            }
            StateProj::Sent { response } => {
                return Poll::Ready(match ready!(response.poll(cx)) {
                    Ok(response) => from_upstream(response),
                    Err(error) => bad_gateway(error),
                });
            }
            StateProj::Answered { status } => return Poll::Ready(status_reply(*status)),
        }
    }
}
