//! CORS for browser SDKs: preflights on every path, the requested headers
//! echoed (`*` does not cover `Authorization`), and a long `Max-Age`.

use std::time::Duration;

use axum::http::{HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::config::Cors;

/// Builds the CORS layer. Allowed origins are echoed (never `*`) so that
/// credentialed requests work too, as with rudder-server.
pub(crate) fn layer(config: &Cors) -> CorsLayer {
    let origin = if config.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(
            config
                .allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .allow_credentials(true)
        .max_age(Duration::from_secs(config.max_age_secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    async fn preflight(config: &Cors, origin: &str) -> axum::http::Response<Body> {
        let app = Router::new()
            .route("/v1/t", post(|| async { "ok" }))
            .layer(layer(config));
        let req = Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/t")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type,rsa-retry-attempt",
            )
            .body(Body::empty())
            .unwrap();
        app.oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn any_origin_is_echoed_with_requested_headers() {
        let r = preflight(&Cors::default(), "https://shop.example").await;
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://shop.example"
        );
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization,content-type,rsa-retry-attempt"
        );
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "86400");
    }

    #[tokio::test]
    async fn listed_origins_only() {
        let config = Cors {
            allowed_origins: vec!["https://a.example".into()],
            max_age_secs: 60,
        };
        let r = preflight(&config, "https://b.example").await;
        assert!(r
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none());
        let r = preflight(&config, "https://a.example").await;
        assert_eq!(
            r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://a.example"
        );
    }
}
