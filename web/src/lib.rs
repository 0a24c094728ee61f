//! Lingr in a browser, served by the api role (and so by `lingr dev`): the chat page at `/`
//! and `/rooms/<room>` (a room's shareable link), its scripts and styles under `/assets/`, and
//! the live badge any site can embed, `/badge.js`.
//!
//! The files are plain HTML, CSS and JavaScript modules in `web/assets/`, embedded in the
//! binary when it is built: there is nothing for a user to build or install, and a deployed
//! binary always serves the page that matches its API.

use axum::http::header::{self, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// A file served as is.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// An asset named `$file` in `web/assets/`, served at `/assets/$file`.
macro_rules! asset {
    ($file:literal, $content_type:expr) => {
        Asset {
            path: concat!("/assets/", $file),
            content_type: $content_type,
            body: include_str!(concat!("../assets/", $file)),
        }
    };
}

/// The chat page's files, besides the page itself.
const ASSETS: &[Asset] = &[
    asset!("app.js", JAVASCRIPT),
    asset!("room.js", JAVASCRIPT),
    asset!("view.js", JAVASCRIPT),
    asset!("api.js", JAVASCRIPT),
    asset!("style.css", "text/css; charset=utf-8"),
];

const PAGE: &str = include_str!("../assets/index.html");
const BADGE: &str = include_str!("../assets/badge.js");

/// What the page may load: its own scripts and styles, and calls to its own host. Markup that
/// got into the page some other way could run no script.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The page's modules must all come from one binary (a new app.js beside a cached old room.js
/// would break after a deploy), so they are checked each time; the badge stands alone.
const ASSET_CACHING: &str = "no-cache";
const BADGE_CACHING: &str = "public, max-age=300";

/// The page, its files and the badge.
pub fn router() -> Router {
    let page = || async {
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
                (header::CACHE_CONTROL, "no-cache"),
                (header::REFERRER_POLICY, "same-origin"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            PAGE,
        )
    };
    let badge = || async {
        (
            [
                (header::CONTENT_TYPE, JAVASCRIPT),
                (header::CACHE_CONTROL, BADGE_CACHING),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                // Loaded by pages of any origin, including ones that isolate themselves.
                (
                    HeaderName::from_static("cross-origin-resource-policy"),
                    "cross-origin",
                ),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            ],
            BADGE,
        )
    };
    let mut router = Router::new()
        .route("/", get(page))
        .route("/rooms/{room}", get(page))
        .route("/badge.js", get(badge));
    for asset in ASSETS {
        router = router.route(asset.path, get(move || async move { serve(asset) }));
    }
    router
}

fn serve(asset: &'static Asset) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(ASSET_CACHING),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.body,
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::*;

    async fn get_path(path: &str) -> axum::response::Response {
        router()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("answer")
    }

    #[tokio::test]
    async fn every_module_the_page_imports_is_served() {
        let served: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        let sources = std::iter::once(PAGE).chain(ASSETS.iter().map(|a| a.body));
        for source in sources {
            for part in source.split(['\'', '"']) {
                let named = part.trim_start_matches('.');
                if named.starts_with("/assets/")
                    || (part.starts_with("./") && part.ends_with(".js"))
                {
                    let path = if named.starts_with("/assets/") {
                        named.to_owned()
                    } else {
                        format!("/assets{named}")
                    };
                    assert!(
                        served.contains(&path.as_str()),
                        "{path} is imported but not served"
                    );
                }
            }
        }
        for asset in ASSETS {
            assert_eq!(
                get_path(asset.path).await.status(),
                StatusCode::OK,
                "{}",
                asset.path
            );
        }
    }

    #[tokio::test]
    async fn the_page_serves_at_a_rooms_link_under_a_policy_that_runs_only_its_own_scripts() {
        let page = get_path("/rooms/lobby").await;
        assert_eq!(page.status(), StatusCode::OK);
        let policy = page
            .headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        let badge = get_path("/badge.js").await;
        assert_eq!(
            badge.headers().get("cross-origin-resource-policy"),
            Some(&HeaderValue::from_static("cross-origin"))
        );
    }
}
