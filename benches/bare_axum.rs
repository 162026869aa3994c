//! The HTTP ceiling for benches/ingest_load.sh: a bare axum server that reads
//! each POST body and answers 200 `{"success":true}` without storing anything.
//! Serves only when FERRY_BARE_LISTEN is set, so `cargo bench` does not hang.

use axum::body::Bytes;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

async fn ack(body: Bytes) -> Json<Value> {
    Json(json!({ "success": true, "bytes": body.len() }))
}

fn main() {
    let Ok(addr) = std::env::var("FERRY_BARE_LISTEN") else {
        eprintln!("bare_axum: set FERRY_BARE_LISTEN=127.0.0.1:PORT to serve (used by benches/ingest_load.sh)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        println!(
            "bare axum listening on http://{}",
            listener.local_addr().unwrap()
        );
        let app = Router::new().fallback(post(ack));
        axum::serve(listener, app).await.unwrap();
    });
}
