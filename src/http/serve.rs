//! The HTTP/1.1 server loop. `axum::serve` gives hyper no timer, so hyper's header-read
//! timeout never fires there and a client that sends half a request line and stalls holds its
//! connection (and a task) forever. This loop configures hyper itself: the request head must
//! arrive within `header_read_timeout`, on a new connection and between keep-alive requests.

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets each
/// connection finish its request in flight, and returns once all connections are closed.
pub async fn serve(
    mut listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    // `stopping` tells connections to finish up; every connection task holds a clone of
    // `open`, so `open_count.closed()` completes when the last one has ended.
    let (stop, stopping) = watch::channel(false);
    let (open_count, open) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        // `Listener::accept` retries failed accepts (e.g. too many open files) after a pause.
        let (stream, peer) = tokio::select! {
            accepted = Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => break,
        };
        // Answers are written whole; don't let Nagle hold back the last segment of one.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "could not set TCP_NODELAY");
        }
        let service = router
            .clone()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let mut stopping = stopping.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            let mut stop_requested = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(err) = result {
                            // Timeouts, resets and malformed requests end up here; none is the
                            // service's fault.
                            tracing::debug!(%peer, error = %err, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stopping.wait_for(|stop| *stop), if !stop_requested => {
                        stop_requested = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(open);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open);
    open_count.closed().await;
}
