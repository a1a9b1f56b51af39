//! The benchmark baseline: the smallest axum server, so tandem's figures can be read as ratios
//! of what the framework and machine do at best. `cargo run --release --example hello -- ADDR`
use axum::{Router, routing::get};

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    let app = Router::new().route("/", get(|| async { "Hello, World!" }));
    axum::serve(listener, app).await.expect("serve");
}
